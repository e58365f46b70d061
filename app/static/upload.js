// Adds to the plain upload form: drag and drop, a list of the chosen files, and resumable uploads (of images and
// videos alike; the form's other fields, a video's settings among them, are posted with the files' ids).
// Each chosen file is sent by tus (tus-js-client, vendor/tus.min.js) to the upload endpoint, with a
// progress bar over all of them; then the form posts the job with the files' ids (`file_id` fields)
// to its own URL, and the server redirects to the job's page. tus-js-client keeps each unfinished
// upload's URL in localStorage, so after a reload or a lost connection the same file, chosen again,
// resumes where it stopped. Without this script the form posts the images as usual.
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
  const unfinished = document.getElementById("unfinished");
  const unfinishedList = document.getElementById("unfinished-list");
  const csrfToken = form.elements.csrf_token.value;
  const endpoint = form.dataset.uploadUrl;
  const limits = {
    fileBytes: Number(form.dataset.maxFileBytes),
    fileSize: form.dataset.maxFileSize,
    files: Number(form.dataset.maxFiles),
    expiryMs: Number(form.dataset.uploadExpiryHours) * 3600 * 1000,
  };
  const parallel = 3; // files sent at once
  const ids = new WeakMap(); // file → its stored file's id, so a form sent again does not send a file twice
  const active = new Set(); // the uploads under way: one failing stops the others (they resume next time)

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

  // Without tus-js-client (not loaded, or a browser it does not support) the form posts the images themselves.
  const resumable = typeof tus !== "undefined" && tus.isSupported;

  // Uploads a reload or a lost connection cut off: named above the form, so the user chooses them again.
  const listUnfinished = async () => {
    if (!resumable) return;
    const storage = tus.defaultOptions.urlStorage;
    const entries = await storage.findAllUploads();
    const fresh = [];
    for (const entry of entries) {
      const expired = Date.now() - Date.parse(entry.creationTime) > limits.expiryMs;
      if (expired) await storage.removeUpload(entry.urlStorageKey);
      else fresh.push(entry);
    }
    unfinishedList.replaceChildren(
      ...fresh.map((entry) => {
        const item = document.createElement("li");
        item.textContent = `${entry.metadata.filename} (${size(entry.size)})`;
        return item;
      }),
    );
    unfinished.hidden = fresh.length === 0;
  };
  listUnfinished();

  // The sentence of the server's JSON error, else what tus-js-client says went wrong.
  const reason = (error) => {
    const response = error.originalResponse;
    if (!response) return "the connection to the server was lost. Start again to resume it.";
    try {
      return JSON.parse(response.getBody()).error.message;
    } catch {
      return `the server answered HTTP ${response.getStatus()}.`;
    }
  };

  // Sends ``file`` by tus, resuming an upload of it that was cut off; resolves to its stored file's id.
  const send = (file, onProgress) =>
    new Promise((resolve, reject) => {
      const upload = new tus.Upload(file, {
        endpoint,
        chunkSize: Number(form.dataset.chunkBytes),
        retryDelays: [0, 1000, 3000, 5000],
        headers: { "X-CSRFToken": csrfToken },
        metadata: { filename: file.name, filetype: file.type },
        removeFingerprintOnSuccess: true,
        onProgress,
        onSuccess: ({ lastResponse }) => {
          active.delete(upload);
          const fileId = lastResponse.getHeader("File-Id");
          if (fileId) resolve(fileId);
          else reject(new Error(`${file.name}: the server did not say which file it stored.`));
        },
        onError: (error) => {
          active.delete(upload);
          reject(new Error(`${file.name}: ${reason(error)}`));
        },
      });
      active.add(upload);
      upload.findPreviousUploads().then((previous) => {
        if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
        upload.start();
      }, reject);
    });

  // Sends every file, a few at a time, moving the bar over all their bytes; resolves to their ids in order.
  const sendAll = async (files) => {
    const total = files.reduce((sum, file) => sum + file.size, 0);
    const sent = files.map((file) => (ids.has(file) ? file.size : 0));
    const show = () => {
      const bytes = sent.reduce((sum, value) => sum + value, 0);
      progress.value = total ? (100 * bytes) / total : 100;
      status.textContent = `Uploading… ${size(bytes)} of ${size(total)}`;
    };
    show();
    let next = 0;
    const lane = async () => {
      while (next < files.length) {
        const index = next++;
        const file = files[index];
        if (ids.has(file)) continue;
        ids.set(
          file,
          await send(file, (bytes) => {
            sent[index] = bytes;
            show();
          }),
        );
        sent[index] = file.size;
        show();
      }
    };
    await Promise.all(Array.from({ length: Math.min(parallel, files.length) }, lane));
    return files.map((file) => ids.get(file));
  };

  // Posts the form with the stored files' ids in place of the images; the server answers with a redirect to
  // the job's page, or the form again with a sentence saying what was wrong (a file named by its name).
  const submitJob = async (files, fileIds) => {
    const body = new FormData(form);
    body.delete("image");
    for (const fileId of fileIds) body.append("file_id", fileId);
    const response = await fetch(form.action, { method: "POST", body, credentials: "same-origin" });
    if (response.ok) {
      window.location.assign(response.url); // the job's page, where the redirect led
      return;
    }
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const sentence = page.getElementById("form-error-text");
    if (!sentence) throw new Error(`The job was not accepted (HTTP ${response.status}).`);
    let named = sentence.textContent;
    fileIds.forEach((fileId, index) => {
      named = named.replaceAll(fileId, files[index].name);
    });
    throw new Error(named);
  };

  // What the form can tell before sending a byte; the server checks each file again. The input's accept list
  // names image types, and video types as "video/*".
  const accepted = input.accept.split(",");
  const isAccepted = (type) =>
    accepted.some((pattern) => (pattern.endsWith("/*") ? type.startsWith(pattern.slice(0, -1)) : type === pattern));
  const check = (files) => {
    if (files.length > limits.files) return `Choose at most ${limits.files} files.`;
    const other = files.find((file) => file.type && !isAccepted(file.type));
    if (other) return `${other.name}: the file is neither an image (JPEG, PNG, WebP, BMP or TIFF) nor a video.`;
    const large = files.find((file) => file.size > limits.fileBytes);
    if (large) return `${large.name} is ${size(large.size)}, more than ${limits.fileSize}.`;
    return "";
  };

  form.addEventListener("submit", async (event) => {
    if (!input.files.length || !resumable) return; // the browser asks for files (required), or posts them
    event.preventDefault();
    const files = Array.from(input.files);
    const problem = check(files);
    showError(problem);
    if (problem) return;
    button.disabled = true;
    progress.hidden = false;
    try {
      const fileIds = await sendAll(files);
      status.textContent = "Uploaded; checking the files…";
      await submitJob(files, fileIds);
    } catch (error) {
      for (const upload of active) upload.abort();
      active.clear();
      showError(error.message);
      button.disabled = false;
      progress.hidden = true;
      status.textContent = "";
    }
    listUnfinished();
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
