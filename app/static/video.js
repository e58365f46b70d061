// The job page's videos: each plays with the boxes of its analysed frames drawn over it (a <canvas> on the
// <video>), labelled with their class and track, and its segments drawn as a timeline under it.
//
// A long video has hundreds of thousands of analysed frames, so boxes are read a window of WINDOW_SECONDS at a
// time from the frames endpoint (?start=&end=): the window under the playhead, and the next one once the
// playhead is half-way through. Windows are kept (the last CACHED_WINDOWS), so scrubbing back costs nothing; a
// seek elsewhere asks for the window there. The frame drawn is the analysed frame nearest the one shown
// (requestVideoFrameCallback gives its exact time; else timeupdate, and animation frames while playing).
// The timeline starts from the segments the page was served with and follows job.js's polls ("job:update");
// a segment that analysed more frames since drops the cached windows it overlaps, so they are asked again (all
// of them when the finish part, which writes the tracks, moves).
// Plain DOM and canvas: the site's CSP allows scripts and styles from its own files only.
"use strict";

(() => {
  const WINDOW_SECONDS = 4;
  const CACHED_WINDOWS = 16;
  const FRAMES_PER_REQUEST = 1000;
  const RETRY_MS = 5000;
  const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

  const seconds = (value) => `${Number(value.toFixed(1))} s`;
  const count = (number) => number.toLocaleString("en-US");

  // The analysed frames of a sorted list that are nearest to time t (the last before it, the first from it).
  const around = (frames, t) => {
    let low = 0;
    let high = frames.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (frames[middle].time < t) low = middle + 1;
      else high = middle;
    }
    return [frames[low - 1], frames[low]].filter(Boolean);
  };

  // A box's label: its class, and its track when the job follows objects.
  const labelOf = (detection) =>
    detection.track === undefined ? detection.name : `${detection.name} #${detection.track}`;

  // The rectangle the picture fills inside the element (a <video> letterboxes: object-fit contain).
  const pictureRect = (width, height, aspect) => {
    const pictureWidth = Math.min(width, height * aspect);
    const pictureHeight = pictureWidth / aspect;
    const x = (width - pictureWidth) / 2;
    const y = (height - pictureHeight) / 2;
    return { x, y, width: pictureWidth, height: pictureHeight };
  };

  const setUp = (section) => {
    const video = section.querySelector("video");
    const canvas = section.querySelector(".video-boxes");
    const now = section.querySelector(".video-now");
    const note = section.querySelector(".video-note");
    const wrap = section.querySelector(".timeline-wrap");
    const timeline = section.querySelector(".timeline");
    const playhead = section.querySelector(".timeline-playhead");
    const fileId = section.dataset.fileId;
    const palette = JSON.parse(section.dataset.palette);
    const media = {
      width: Number(section.dataset.width),
      height: Number(section.dataset.height),
      duration: Number(section.dataset.duration) || Infinity,
    };
    // The farthest an analysed frame may be from the time shown and still be drawn: one sampling interval.
    const rate = Math.min(Number(section.dataset.sampleFps) || Infinity, Number(section.dataset.fps) || Infinity);
    const reach = Number.isFinite(rate) ? 1 / rate : 0.1;
    const windows = new Map(); // window index → {frames: null while asked, then the sorted frames}
    const cells = new Map(); // segment number → its timeline cell
    const seen = new Map(); // "kind number" of each of the video's parts → "status done" when last seen
    let following = false; // whether the parts seen came from a poll (else from the page: nothing to forget)
    let span = { start: 0, end: media.duration };
    let shownTime = 0;
    let videoProblem = ""; // why the video does not play, said until the page goes

    // Says ``message`` (what went wrong loading boxes) above the timeline, else why the video does not play.
    const tell = (message) => {
      if (!note) return;
      note.textContent = message || videoProblem;
      note.hidden = !note.textContent;
    };

    // Detections, a window at a time.

    const load = async (index) => {
      const start = index * WINDOW_SECONDS;
      const end = Math.min(start + WINDOW_SECONDS, media.duration);
      const query = new URLSearchParams({ start, end, limit: FRAMES_PER_REQUEST });
      let url = `${section.dataset.framesUrl}?${query}`;
      const frames = [];
      while (url) {
        const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (!response.ok) throw new Error(`the server answered HTTP ${response.status}`);
        const page = await response.json();
        frames.push(...page.frames);
        url = page.next;
      }
      return frames;
    };

    // The frames of window ``index`` if they are here; asks for them otherwise (once), and draws when they come.
    const framesOf = (index, ask) => {
      const cached = windows.get(index);
      if (cached) {
        windows.delete(index); // kept in the order of use: the least recently used goes first
        windows.set(index, cached);
        return cached.frames;
      }
      if (!ask || index < 0 || index * WINDOW_SECONDS >= media.duration) return null;
      const entry = { frames: null };
      windows.set(index, entry);
      for (const old of windows.keys()) {
        if (windows.size <= CACHED_WINDOWS) break;
        windows.delete(old);
      }
      load(index).then(
        (frames) => {
          entry.frames = frames;
          tell("");
          draw(shownTime);
        },
        (error) => {
          entry.frames = [];
          tell(`The boxes could not be loaded: ${error.message}. Trying again shortly.`);
          window.setTimeout(() => windows.get(index) === entry && windows.delete(index), RETRY_MS);
        },
      );
      return null;
    };

    // The analysed frame nearest time t, from the windows around it; asks for the window under t, and for the
    // next one past its middle. undefined while the window under t is on its way.
    const lastWindow = Math.max(Math.ceil(media.duration / WINDOW_SECONDS) - 1, 0);
    const frameAt = (t) => {
      const index = Math.min(Math.floor(t / WINDOW_SECONDS), lastWindow);
      const here = framesOf(index, true);
      if (t - index * WINDOW_SECONDS >= WINDOW_SECONDS / 2) framesOf(index + 1, true);
      if (here === null) return undefined;
      const nearby = [framesOf(index - 1, false), here, framesOf(index + 1, false)];
      const candidates = nearby.flatMap((frames) => around(frames || [], t));
      let best = null;
      for (const frame of candidates) {
        if (!best || Math.abs(frame.time - t) < Math.abs(best.time - t)) best = frame;
      }
      return best && Math.abs(best.time - t) <= reach + 1e-6 ? best : null;
    };

    // Drawing.

    const context = canvas && canvas.getContext("2d");

    const drawBoxes = (detections) => {
      const ratio = window.devicePixelRatio || 1;
      const width = canvas.clientWidth;
      const height = canvas.clientHeight;
      if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
        canvas.width = Math.round(width * ratio);
        canvas.height = Math.round(height * ratio);
      }
      context.setTransform(ratio, 0, 0, ratio, 0, 0);
      context.clearRect(0, 0, width, height);
      const shown = video.videoWidth && video.videoHeight;
      const aspect = shown ? video.videoWidth / video.videoHeight : media.width / media.height;
      const picture = pictureRect(width, height, aspect);
      const scaleX = picture.width / media.width;
      const scaleY = picture.height / media.height;
      const fontSize = Math.max(11, Math.min(16, picture.width / 40));
      context.font = `600 ${fontSize}px system-ui, "DejaVu Sans", sans-serif`;
      context.lineWidth = 2;
      context.textBaseline = "top";
      for (const detection of detections) {
        const box = detection.box;
        const x = picture.x + box.x1 * scaleX;
        const y = picture.y + box.y1 * scaleY;
        const colour = palette[(detection.track ?? detection.class) % palette.length];
        context.strokeStyle = colour;
        context.strokeRect(x, y, (box.x2 - box.x1) * scaleX, (box.y2 - box.y1) * scaleY);
        const label = labelOf(detection);
        const labelWidth = context.measureText(label).width + 6;
        const labelHeight = fontSize + 4;
        const labelX = Math.min(Math.max(x - 1, 0), Math.max(width - labelWidth, 0));
        const labelY = y - labelHeight >= picture.y ? y - labelHeight : y;
        context.fillStyle = colour;
        context.fillRect(labelX, labelY, labelWidth, labelHeight);
        context.fillStyle = "#fff";
        context.fillText(label, labelX + 3, labelY + 2);
      }
    };

    // Draws the boxes of the analysed frame nearest time t, says what they are under the video, and moves the
    // timeline's playhead. The section's data-time, data-frame and data-boxes say what is drawn.
    const draw = (t) => {
      shownTime = t;
      movePlayhead(t);
      if (!canvas) return;
      const frame = frameAt(t);
      const detections = frame ? frame.detections : [];
      drawBoxes(detections);
      section.dataset.time = t.toFixed(3);
      section.dataset.frame = frame ? frame.frame : "";
      section.dataset.boxes = detections.length;
      let sentence = "Loading the boxes…";
      if (frame === null) sentence = `${seconds(t)}: no analysed frame here.`;
      else if (frame) {
        const found = detections.map(labelOf).join(", ") || "nothing found";
        sentence = `${seconds(frame.time)} (frame ${count(frame.frame)}): ${found}.`;
      }
      if (now.textContent !== sentence) now.textContent = sentence;
    };

    // The timeline of segments.

    const movePlayhead = (t) => {
      const length = span.end - span.start;
      const share = length > 0 ? Math.min(Math.max((t - span.start) / length, 0), 1) : 0;
      playhead.style.left = `${share * 100}%`;
    };

    const cellOf = (segment) => {
      let cell = cells.get(segment.number);
      if (cell) return cell;
      const item = document.createElement("li");
      item.className = "segment-cell";
      const button = document.createElement("button");
      button.type = "button";
      button.className = "segment";
      const doneBar = document.createElement("span");
      doneBar.className = "segment-fill";
      const failedBar = document.createElement("span");
      failedBar.className = "segment-lost";
      button.append(doneBar, failedBar);
      button.addEventListener("click", () => {
        if (video) video.currentTime = segment.start;
      });
      item.append(button);
      timeline.append(item);
      cell = { item, button, doneBar, failedBar };
      cells.set(segment.number, cell);
      return cell;
    };

    const showSegment = (segment) => {
      const cell = cellOf(segment);
      const total = segment.total || 0;
      const doneShare = total ? segment.done / total : Number(segment.status === "done");
      const failedShare = total ? segment.failed / total : 0;
      cell.item.style.flexGrow = String(Math.max(segment.end - segment.start, 0.001));
      cell.item.dataset.status = segment.status;
      cell.item.dataset.failed = segment.failed;
      cell.doneBar.style.width = `${Math.min(doneShare, 1) * 100}%`;
      cell.failedBar.style.width = `${Math.min(failedShare, 1) * 100}%`;
      const of = segment.total === null ? "" : ` of ${count(total)}`;
      const failed = segment.failed ? `, ${count(segment.failed)} could not be decoded` : "";
      const error = segment.error ? `. ${segment.error}` : "";
      const when = `${seconds(segment.start)} to ${seconds(segment.end)}`;
      const frames = `${count(segment.done)}${of} frames${failed}`;
      const label = `Segment ${segment.number + 1}, ${when}: ${segment.status}, ${frames}${error}`;
      cell.button.title = label;
      cell.button.setAttribute("aria-label", label);
    };

    // Drops the cached windows a part changed since they were asked for: a segment's (it analysed more frames),
    // or all of them when the finish part moved (it writes every frame's track).
    const forgetChanged = (part) => {
      const key = `${part.kind} ${part.number}`;
      const state = `${part.status} ${part.done}`;
      const before = seen.get(key);
      seen.set(key, state);
      if (before === state || (before === undefined && !following)) return false;
      const segment = part.kind === "segment" ? part : { start: -Infinity, end: Infinity };
      for (const index of Array.from(windows.keys())) {
        const start = index * WINDOW_SECONDS;
        if (start < segment.end && start + WINDOW_SECONDS > segment.start) windows.delete(index);
      }
      return true;
    };

    const showTimeline = (parts) => {
      const own = parts.filter((part) => part.file_id === fileId);
      const segments = own.filter((part) => part.kind === "segment");
      if (!segments.length) return;
      span = { start: Math.min(...segments.map((s) => s.start)), end: Math.max(...segments.map((s) => s.end)) };
      section.querySelector(".timeline-start").textContent = seconds(span.start);
      section.querySelector(".timeline-end").textContent = seconds(span.end);
      for (const segment of segments) showSegment(segment);
      wrap.hidden = false;
      const changed = own.map(forgetChanged).some(Boolean);
      following = true;
      if (changed) draw(shownTime);
      else movePlayhead(shownTime);
    };

    showTimeline(JSON.parse(section.dataset.parts));

    // Following the video.

    const inUse = () => Boolean(video) && (video.played.length > 0 || video.currentTime > 0);

    if (video) {
      video.addEventListener("error", () => {
        videoProblem = `This browser could not load or play this video (${video.dataset.type}).`;
        tell("");
      });
      if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
        const onFrame = (_now, metadata) => {
          draw(metadata.mediaTime);
          video.requestVideoFrameCallback(onFrame);
        };
        video.requestVideoFrameCallback(onFrame);
      } else {
        const whilePlaying = () => {
          draw(video.currentTime);
          if (!video.paused && !video.ended) window.requestAnimationFrame(whilePlaying);
        };
        video.addEventListener("play", () => window.requestAnimationFrame(whilePlaying));
        video.addEventListener("timeupdate", () => draw(video.currentTime));
      }
      for (const event of ["loadeddata", "seeked"]) video.addEventListener(event, () => draw(video.currentTime));
      new ResizeObserver(() => draw(shownTime)).observe(canvas);
    }

    return { showTimeline, inUse };
  };

  const players = Array.from(document.querySelectorAll(".video-player"), setUp);
  const job = document.getElementById("job");
  if (!players.length || !job) return;
  job.addEventListener("job:update", (event) => {
    for (const player of players) player.showTimeline(event.detail.parts || []);
    if (FINISHED.has(event.detail.status) && players.some((player) => player.inUse())) event.preventDefault();
  });
})();
