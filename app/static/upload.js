// Adds to the plain upload form: drag and drop, a list of the chosen files, a size
// check before sending, and an upload progress bar. Without this script the form
// posts as usual and the server redirects to the job's page.
"use strict";

(() => {
  const form = document.getElementById("upload");
  if (!form) return;
  document.documentElement.classList.add("js");
  const input = document.getElementById("images");
  const zone = document.getElementById("dropzone");
  const chosen = document.getElementById("chosen");
  const button = document.getElementById("submit");
  const progress = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const errorBox = document.getElementById("form-error");
  const errorText = document.getElementById("form-error-text");
  const maxBytes = Number(form.dataset.maxBytes);

  const size = (bytes) =>
    bytes < 1024 * 1024 ? `${Math.max(1, Math.round(bytes / 1024))} KB` : `${(bytes / 1024 / 1024).toFixed(1)} MB`;

  const showError = (message) => {
    errorText.textContent = message;
    errorBox.hidden = !message;
    if (message) errorBox.scrollIntoView({ block: "nearest" });
  };

  const listFiles = () => {
    chosen.replaceChildren(
      ...Array.from(input.files, (file) => {
        const item = document.createElement("li");
        item.textContent = `${file.name} (${size(file.size)})`;
        return item;
      }),
    );
  };

  const totalBytes = () => Array.from(input.files).reduce((sum, file) => sum + file.size, 0);

  input.addEventListener("change", () => {
    showError("");
    listFiles();
  });

  // Dropping files anywhere on the page chooses them; the zone lights up while dragging.
  const hasFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files");
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    zone.classList.remove("dragging");
    input.files = event.dataTransfer.files;
    input.dispatchEvent(new Event("change"));
  });

  const finish = () => {
    button.disabled = false;
    progress.hidden = true;
    status.textContent = "";
  };

  form.addEventListener("submit", (event) => {
    if (!input.files.length) return; // the browser asks for files (required)
    event.preventDefault();
    if (totalBytes() > maxBytes) {
      showError(`The chosen images add up to ${size(totalBytes())}, more than ${form.dataset.maxSize}; choose fewer or smaller ones.`);
      return;
    }
    showError("");
    button.disabled = true;
    progress.hidden = false;
    progress.value = 0;
    status.textContent = "Uploading…";

    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.upload.addEventListener("progress", (progressEvent) => {
      if (progressEvent.lengthComputable) progress.value = (100 * progressEvent.loaded) / progressEvent.total;
    });
    request.upload.addEventListener("load", () => {
      status.textContent = "Checking the images…";
    });
    request.addEventListener("load", () => {
      if (request.status < 400) {
        window.location.assign(request.responseURL); // the job's page, where the redirect led
        return;
      }
      // The server answered with the form and a sentence saying what was wrong.
      const page = new DOMParser().parseFromString(request.responseText, "text/html");
      const sentence = page.getElementById("form-error-text");
      showError(sentence ? sentence.textContent : `The upload failed (HTTP ${request.status}).`);
      finish();
    });
    request.addEventListener("error", () => {
      showError("The upload failed: the connection to the server was lost. Try again.");
      finish();
    });
    request.send(new FormData(form));
  });

  // What the chosen model finds, and its default size, follow the model picker.
  const model = document.getElementById("model");
  const imgsz = document.getElementById("imgsz");
  const sizeRule = document.getElementById("imgsz-rule");
  model.addEventListener("change", () => {
    for (const about of document.querySelectorAll(".model-about")) {
      about.hidden = about.dataset.model !== model.value;
      if (!about.hidden) {
        imgsz.placeholder = about.dataset.size;
        sizeRule.textContent = about.dataset.sizeRule;
      }
    }
  });
})();
