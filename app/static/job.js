// Polls the job's progress (/api/v1/jobs/<id>/progress, for the files this page shows) while it is queued or
// running: moves the progress bars, fills in each image card as its result lands (what was found, and its boxes
// drawn over the thumbnail), and tells the page's other scripts (video.js: the segments' timeline) with a
// "job:update" event carrying the answer. Each poll sends the previous answer's cursor, so it brings only the files
// that changed since. Once the job has finished the page reloads so its summary is drawn, unless a listener cancels
// the event (a video is being watched): then the Cancel button goes and a note offers the reload instead.
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
  const thumbs = document.querySelector(".thumbs");
  const palette = thumbs ? JSON.parse(thumbs.dataset.palette) : [];
  // What a card says by the file's state (the page's CARD_SENTENCES), for a job of each status.
  const sentences = thumbs ? JSON.parse(thumbs.dataset.sentences) : {};
  const intervalMs = Number(job.dataset.pollMs) || 700;
  const finished = new Set(["succeeded", "failed", "cancelled"]);
  const SVG = "http://www.w3.org/2000/svg";
  const capitalize = (word) => word.charAt(0).toUpperCase() + word.slice(1);
  const count = (number) => number.toLocaleString("en-US");
  let cursor = null;

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

  // "circle 2 · square 1": objects per class, in class order, as the page's template writes them.
  const found = (file, names) => {
    const counts = new Map();
    for (const box of [...file.boxes].sort((a, b) => a.class - b.class)) {
      const name = names[box.class] ?? String(box.class);
      counts.set(name, (counts.get(name) || 0) + 1);
    }
    return [...counts].map(([name, number]) => `${name} ${number}`).join(" · ");
  };

  const says = (file, names, jobStatus) =>
    file.state === "done" && file.boxes.length ? found(file, names) : sentences[jobStatus][file.state];

  // The boxes over the thumbnail, in the image's pixels: the SVG's viewBox scales them with the picture, which
  // both fit into the same box (object-fit: contain, and the SVG's default preserveAspectRatio).
  const drawBoxes = (svg, file) => {
    if (file.width && file.height) svg.setAttribute("viewBox", `0 0 ${file.width} ${file.height}`);
    svg.replaceChildren(
      ...file.boxes.map((box) => {
        const [x1, y1, x2, y2] = box.box;
        const rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("x", x1);
        rect.setAttribute("y", y1);
        rect.setAttribute("width", x2 - x1);
        rect.setAttribute("height", y2 - y1);
        rect.setAttribute("stroke", palette[box.class % palette.length]);
        return rect;
      }),
    );
  };

  const fill = (body) => {
    if (!thumbs) return;
    for (const file of body.files) {
      const card = thumbs.querySelector(`li[data-position="${file.position}"]`);
      if (!card || card.classList.contains("thumb-deleted")) continue;
      card.dataset.state = file.state;
      card.querySelector(".found").textContent = says(file, body.names, body.status);
      const svg = card.querySelector(".thumb-boxes");
      if (svg) drawBoxes(svg, file);
    }
  };

  // Whether the page may reload: false when a listener of the update asked to keep it.
  const tell = (body) => job.dispatchEvent(new CustomEvent("job:update", { detail: body, cancelable: true }));

  const poll = async () => {
    try {
      const url = new URL(job.dataset.progressUrl, window.location.href);
      if (cursor) url.searchParams.set("since", cursor);
      const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      cursor = body.cursor;
      show(body);
      fill(body);
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
