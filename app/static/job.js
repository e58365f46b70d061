// Polls the job's JSON while it is queued or running, moves the progress bars, and tells the page's other
// scripts (video.js: the segments' timeline) with a "job:update" event carrying the JSON. Once the job has
// finished the page reloads so its results are drawn, unless a listener cancels the event (a video is being
// watched): then the Cancel button goes and a note offers the reload instead.
"use strict";

(() => {
  const job = document.getElementById("job");
  if (!job) return;
  const progress = document.getElementById("progress");
  const text = document.getElementById("progress-text");
  const framesProgress = document.getElementById("frames-progress");
  const framesText = document.getElementById("frames-text");
  const finishedNote = document.getElementById("finished-note");
  const cancel = document.getElementById("cancel");
  const status = document.getElementById("status");
  const intervalMs = Number(job.dataset.pollMs) || 700;
  const finished = new Set(["succeeded", "failed", "cancelled"]);
  const capitalize = (word) => word.charAt(0).toUpperCase() + word.slice(1);
  const count = (number) => number.toLocaleString("en-US");

  const showFrames = (frames) => {
    if (!frames || !framesText) return;
    framesProgress.max = Math.max(frames.total, 1);
    framesProgress.value = frames.done;
    const failed = frames.failed ? `, ${count(frames.failed)} could not be decoded` : "";
    framesText.textContent = `${count(frames.done)} of ${count(frames.total)} frames analysed${failed}`;
  };

  const show = (body) => {
    progress.max = Math.max(body.progress.total, 1);
    progress.value = body.progress.done;
    text.textContent = `${body.progress.done} of ${body.progress.total} ${text.dataset.noun} done`;
    showFrames(body.progress.frames);
    status.textContent = capitalize(body.status);
    status.className = `status status-${body.status}`;
    job.dataset.status = body.status;
  };

  // Whether the page may reload: false when a listener of the update asked to keep it.
  const tell = (body) => job.dispatchEvent(new CustomEvent("job:update", { detail: body, cancelable: true }));

  const poll = async () => {
    try {
      const response = await fetch(job.dataset.statusUrl, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      show(body);
      const mayReload = tell(body);
      if (finished.has(body.status)) {
        if (mayReload) {
          window.location.reload();
        } else {
          finishedNote.hidden = false;
          cancel.form.hidden = true;
        }
        return;
      }
    } catch (error) {
      text.textContent = "Lost contact with the server; trying again…";
    }
    window.setTimeout(poll, intervalMs);
  };

  window.setTimeout(poll, intervalMs);
})();
