// Polls the job's JSON while it is queued or running, moves the progress bar,
// and reloads the page once the job has finished so its results are drawn.
"use strict";

(() => {
  const job = document.getElementById("job");
  if (!job) return;
  const progress = document.getElementById("progress");
  const text = document.getElementById("progress-text");
  const status = document.getElementById("status");
  const intervalMs = 700;
  const finished = new Set(["succeeded", "failed", "cancelled"]);
  const capitalize = (word) => word.charAt(0).toUpperCase() + word.slice(1);

  const show = (body) => {
    progress.max = Math.max(body.progress.total, 1);
    progress.value = body.progress.done;
    text.textContent = `${body.progress.done} of ${body.progress.total} images done`;
    status.textContent = capitalize(body.status);
    status.className = `status status-${body.status}`;
    job.dataset.status = body.status;
  };

  const poll = async () => {
    try {
      const response = await fetch(job.dataset.statusUrl, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      show(body);
      if (finished.has(body.status)) {
        window.location.reload();
        return;
      }
    } catch (error) {
      text.textContent = "Lost contact with the server; trying again…";
    }
    window.setTimeout(poll, intervalMs);
  };

  window.setTimeout(poll, intervalMs);
})();
