// txt2vid tab: give each run a task id, so the WebUI's progress bar and live preview follow it.

function submit_txt2vid() {
    var id = randomId();
    requestProgress(id, gradioApp().getElementById("txt2vid_video"), gradioApp().getElementById("txt2vid_gallery"), function() {});

    var args = Array.from(arguments);
    args[0] = id; // the hidden task-id input, which call_queue reads
    return args;
}
