// The rater page: shows one pair at a time through the JSON API (evalsite/rating/api.py).
//
// Keys: 1 or ArrowLeft = left, 2 or ArrowRight = right, T = tie, B = both bad (the answer goes to the
// focused question, then focus moves to the next one), ArrowUp/ArrowDown = previous/next question,
// Enter = submit. The first pair and the one after it come from GET .../next (?exclude=<current>); from then
// on each answer brings the pair after the preloaded one (POST .../votes?next=1&exclude=<preloaded>), so a rated
// pair is one request, and the next pair's images are preloaded while the rater answers. A submission carries one idempotency key that every retry reuses, so
// a retried or doubled submission is stored once. Reloading the page resumes the open pair.
//
// A text-to-3D pair's images are turntables (images.left.views squares side by side in one PNG): each is shown
// one view at a time in a square window; both turn together by themselves (one view every TURN_MS, unless the
// browser asks for reduced motion), and each has a slider under it. Moving a slider stops that side's turning
// at the chosen view; tapping the object starts it again.
(function () {
  "use strict";

  const root = document.getElementById("rater");
  if (!root) return;

  const CHOICES = [
    { value: "left", label: "Left", key: "1" },
    { value: "right", label: "Right", key: "2" },
    { value: "tie", label: "Tie", key: "T" },
    { value: "both_bad", label: "Both bad", key: "B" },
  ];
  const KEY_TO_CHOICE = { "1": "left", ArrowLeft: "left", "2": "right", ArrowRight: "right",
    t: "tie", T: "tie", b: "both_bad", B: "both_bad" };
  const MIN_VALID_MS = 5000; // a preloaded pair expiring sooner than this is not shown
  const TURN_MS = 450; // how long a turntable shows each view while it turns by itself
  const SIDES = ["left", "right"];
  const IMAGE_RETRY_MS = 2000; // the pause before moving on from a pair whose image could not be loaded

  const csrfToken = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  const nextUrl = root.dataset.nextUrl;
  const el = {
    pairView: document.getElementById("pair-view"),
    doneView: document.getElementById("done-view"),
    prompt: document.getElementById("prompt"),
    left: document.getElementById("image-left"),
    right: document.getElementById("image-right"),
    questions: document.getElementById("questions"),
    submit: document.getElementById("submit"),
    status: document.getElementById("status"),
    progressFill: document.getElementById("progress-fill"),
    progressText: document.getElementById("progress-text"),
    pair: document.getElementById("pair"),
  };
  const turntable = {
    views: 1,
    timer: null,
    turning: { left: false, right: false },
    figure: { left: document.getElementById("figure-left"), right: document.getElementById("figure-right") },
    slider: { left: document.getElementById("turn-left"), right: document.getElementById("turn-right") },
  };

  const state = {
    current: null, // the assignment on screen
    answers: {}, // criterion -> choice
    focus: 0, // index of the focused question
    shownAt: 0, // performance.now() when the pair appeared
    key: null, // idempotency key of the current submission
    next: null, // the preloaded next assignment (or null)
    nextPromise: null, // the request fetching it
    progress: null,
    busy: false,
  };

  // ---------------------------------------------------------------------------------------------
  // API
  // ---------------------------------------------------------------------------------------------

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function newKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function api(url, options) {
    const response = await fetch(url, Object.assign({
      credentials: "same-origin",
      headers: { "Accept": "application/json", "Content-Type": "application/json", "X-CSRFToken": csrfToken },
    }, options || {}));
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = { error: "bad_response", detail: "The server sent an unexpected answer (" + response.status + ")." };
    }
    return { status: response.status, body: body };
  }

  // A restarting database or a proxy whose upstream is away: wait and ask again (a vote keeps its key).
  const BRIEFLY_AWAY = [502, 503, 504];
  const SEND_PATIENCE_MS = 120000;

  function retryAfterMs(result) {
    return 1000 * Math.min(30, (result.body && result.body.retry_after_seconds) || 2);
  }

  async function fetchNext(excludeId) {
    const url = excludeId ? nextUrl + "&exclude=" + encodeURIComponent(excludeId) : nextUrl;
    for (let attempt = 0; ; attempt++) {
      let result;
      try {
        result = await api(url);
      } catch (e) {
        if (attempt >= 4) throw new Error("Cannot reach the server. Check your connection and reload.");
        await sleep(1000 * 2 ** attempt);
        continue;
      }
      if (result.status === 200) return result.body;
      if ((result.status === 429 && attempt < 6) || (BRIEFLY_AWAY.includes(result.status) && attempt < 60)) {
        await sleep(retryAfterMs(result));
        continue;
      }
      throw new Error((result.body && result.body.detail) || "Could not load the next pair.");
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Showing a pair
  // ---------------------------------------------------------------------------------------------

  function setStatus(text, isError) {
    el.status.textContent = text || "";
    el.status.classList.toggle("error", Boolean(isError));
  }

  function showProgress(progress) {
    if (!progress) return;
    state.progress = progress;
    if (progress.target) {
      const share = Math.min(1, progress.answered / progress.target);
      el.progressFill.style.width = (100 * share).toFixed(1) + "%";
      el.progressText.textContent = progress.answered + " / " + progress.target + " pairs";
    } else {
      el.progressFill.style.width = "0";
      el.progressText.textContent = progress.answered + (progress.answered === 1 ? " pair" : " pairs") + " rated";
    }
  }

  function markSmall(img) {
    // one view of a turntable is as high as the image: its height is the side of what is shown
    img.classList.toggle("small", img.naturalHeight > 0 && img.naturalHeight < 256);
  }

  // ---------------------------------------------------------------------------------------------
  // Turntables (a text-to-3D pair)
  // ---------------------------------------------------------------------------------------------

  function showView(side, frame) {
    turntable.figure[side].dataset.frame = String(frame);
    turntable.figure[side].style.setProperty("--frame", String(frame));
    turntable.slider[side].value = String(frame);
  }

  function turnOnce() {
    SIDES.forEach((side) => {
      if (turntable.turning[side]) {
        showView(side, (Number(turntable.figure[side].dataset.frame) + 1) % turntable.views);
      }
    });
  }

  function setUpTurntables(views) {
    turntable.views = views;
    el.pair.classList.toggle("turntables", views > 1);
    el.pair.style.setProperty("--views", String(views));
    const still = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    SIDES.forEach((side) => {
      turntable.slider[side].hidden = views <= 1;
      turntable.slider[side].max = String(views - 1);
      turntable.turning[side] = views > 1 && !still;
      showView(side, 0);
    });
    if (views > 1 && !turntable.timer) turntable.timer = setInterval(turnOnce, TURN_MS);
    if (views <= 1 && turntable.timer) {
      clearInterval(turntable.timer);
      turntable.timer = null;
    }
  }

  function preloadImages(assignment) {
    ["left", "right"].forEach((side) => {
      const img = new Image();
      img.src = assignment.images[side].url;
    });
  }

  function show(assignment, progress) {
    showProgress(progress);
    state.current = assignment;
    state.answers = {};
    state.focus = 0;
    state.key = newKey();
    if (!assignment) {
      root.dataset.assignment = "";
      root.dataset.state = "done";
      el.pairView.hidden = true;
      el.doneView.hidden = false;
      root.setAttribute("aria-busy", "false");
      return;
    }
    el.doneView.hidden = true;
    el.pairView.hidden = false;
    el.prompt.textContent = assignment.prompt.text;
    el.left.src = assignment.images.left.url;
    el.left.alt = assignment.images.left.alt;
    el.right.src = assignment.images.right.url;
    el.right.alt = assignment.images.right.alt;
    setUpTurntables(assignment.images.left.views || 1);
    renderQuestions(assignment.criteria);
    state.shownAt = performance.now();
    root.dataset.assignment = assignment.id;
    root.dataset.state = "ready";
    root.setAttribute("aria-busy", "false");
    window.scrollTo(0, 0); // a new pair starts at the prompt
    setFocus(0, false);
  }

  function renderQuestions(criteria) {
    el.questions.textContent = "";
    criteria.forEach((criterion, index) => {
      const box = document.createElement("fieldset");
      box.className = "question";
      box.tabIndex = -1;
      box.dataset.criterion = criterion.key;
      const legend = document.createElement("legend");
      legend.textContent = criterion.question;
      box.appendChild(legend);
      const row = document.createElement("div");
      row.className = "choices";
      CHOICES.forEach((choice) => {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "choice";
        button.dataset.choice = choice.value;
        button.setAttribute("aria-pressed", "false");
        button.appendChild(document.createTextNode(choice.label + " "));
        const kbd = document.createElement("kbd");
        kbd.textContent = choice.key;
        button.appendChild(kbd);
        button.addEventListener("click", () => setAnswer(index, choice.value));
        row.appendChild(button);
      });
      box.appendChild(row);
      box.addEventListener("focusin", () => markFocus(index));
      el.questions.appendChild(box);
    });
    updateSubmit();
  }

  function questionBoxes() {
    return Array.from(el.questions.querySelectorAll(".question"));
  }

  function markFocus(index) {
    state.focus = index;
    questionBoxes().forEach((box, i) => box.classList.toggle("active", i === index));
  }

  function setFocus(index, scroll) {
    const boxes = questionBoxes();
    if (!boxes.length) return;
    index = Math.max(0, Math.min(boxes.length - 1, index));
    markFocus(index);
    boxes[index].focus({ preventScroll: true });
    if (scroll !== false) boxes[index].scrollIntoView({ block: "nearest" });
  }

  function setAnswer(index, choice) {
    const boxes = questionBoxes();
    const box = boxes[index];
    if (!box || !state.current || state.busy) return;
    state.answers[box.dataset.criterion] = choice;
    box.classList.add("answered");
    box.querySelectorAll(".choice").forEach((button) => {
      button.setAttribute("aria-pressed", String(button.dataset.choice === choice));
    });
    updateSubmit();
    const unanswered = boxes.findIndex((b) => !state.answers[b.dataset.criterion]);
    if (unanswered >= 0) {
      setFocus(unanswered);
    } else {
      markFocus(index);
      el.submit.focus();
    }
  }

  function missingIndex() {
    return questionBoxes().findIndex((b) => !state.answers[b.dataset.criterion]);
  }

  function updateSubmit() {
    el.submit.disabled = state.busy || !state.current || missingIndex() >= 0;
  }

  // ---------------------------------------------------------------------------------------------
  // Submitting and moving on
  // ---------------------------------------------------------------------------------------------

  function preloadNext() {
    if (!state.current) return;
    const id = state.current.id;
    state.next = null;
    state.nextPromise = fetchNext(id).then((body) => {
      if (state.current && state.current.id === id) {
        state.next = body.assignment;
        if (state.next) preloadImages(state.next);
      }
    }).catch(() => {
      state.next = null;
    });
  }

  function stillValid(assignment) {
    return new Date(assignment.expires_at).getTime() - Date.now() > MIN_VALID_MS;
  }

  // Move on after an answer. `after`: what the answer brought (its `next`), the pair to hold after the preloaded one,
  // or the one to show when none was preloaded; without it (a refused answer, a refused hand-out) the page asks.
  async function advance(after) {
    if (state.nextPromise) await state.nextPromise;
    const next = state.next;
    state.next = null;
    state.nextPromise = null;
    const handed = after && !after.error ? after : null;
    if (next && stillValid(next)) {
      show(next, state.progress);
      if (handed) {
        state.next = handed.assignment; // null: nothing is left after this pair
        if (state.next) preloadImages(state.next);
        return;
      }
    } else if (handed && (!handed.assignment || stillValid(handed.assignment))) {
      show(handed.assignment, handed.progress);
    } else {
      const body = await fetchNext(null);
      show(body.assignment, body.progress);
    }
    preloadNext();
  }

  async function submit() {
    if (state.busy || !state.current) return;
    const missing = missingIndex();
    if (missing >= 0) {
      setFocus(missing);
      setStatus("Please answer every question first.", true);
      return;
    }
    state.busy = true;
    root.dataset.state = "sending";
    updateSubmit();
    setStatus("Sending…");
    const assignment = state.current;
    // The answer also asks for the pair after the preloaded one: one request per rated pair (votes ?next=1).
    if (state.nextPromise) await state.nextPromise;
    const preloaded = state.next && state.next.id;
    const voteUrl = assignment.votes_url + "?next=1" + (preloaded ? "&exclude=" + encodeURIComponent(preloaded) : "");
    let after = null;
    const body = JSON.stringify({
      idempotency_key: state.key,
      choices: Object.assign({}, state.answers),
      time_taken_ms: Math.round(performance.now() - state.shownAt),
    });
    let moveOn = false;
    const giveUpAt = performance.now() + SEND_PATIENCE_MS;
    for (let attempt = 0; performance.now() < giveUpAt; attempt++) {
      let result;
      try {
        result = await api(voteUrl, { method: "POST", body: body });
      } catch (e) {
        setStatus("Network problem, retrying…", true);
        await sleep(Math.min(8000, 500 * 2 ** attempt));
        continue;
      }
      if (BRIEFLY_AWAY.includes(result.status)) {
        setStatus("Network problem: the server is briefly away. Your answer is kept and sent again…", true);
        await sleep(retryAfterMs(result));
        continue;
      }
      if (result.status === 200 || result.status === 201) {
        showProgress(result.body.progress);
        setStatus("");
        after = result.body.next || null;
        moveOn = true;
      } else if (result.status === 429) {
        setStatus("Slow down a little…", true);
        await sleep(1000 * ((result.body && result.body.retry_after_seconds) || 2));
        continue;
      } else if ([403, 404, 409, 410].includes(result.status)) {
        setStatus(result.body.detail + " Here is the next pair.", true);
        moveOn = true;
      } else {
        setStatus((result.body && result.body.detail) || "The answer was not accepted.", true);
      }
      break;
    }
    if (!moveOn) {
      if (el.status.textContent === "Sending…" || el.status.textContent.startsWith("Network")) {
        setStatus("Could not send the answer. Press Enter to try again.", true);
      }
      state.busy = false;
      root.dataset.state = "ready";
      updateSubmit();
      return;
    }
    try {
      root.dataset.state = "loading";
      await advance(after);
    } catch (e) {
      setStatus(e.message, true);
    } finally {
      state.busy = false;
      updateSubmit();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Keyboard and events
  // ---------------------------------------------------------------------------------------------

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const tag = event.target && event.target.tagName;
    // A turntable's slider keeps its arrow keys (they turn the object); the other answer keys still answer.
    const slider = tag === "INPUT" && event.target.type === "range";
    if (slider && event.key.startsWith("Arrow")) return;
    if ((tag === "INPUT" && !slider) || tag === "TEXTAREA" || tag === "SELECT") return;
    if (!state.current) return;
    if (event.key === "Enter") {
      event.preventDefault();
      submit();
      return;
    }
    if (event.key === "ArrowUp" || event.key === "ArrowDown") {
      event.preventDefault();
      setFocus(state.focus + (event.key === "ArrowUp" ? -1 : 1));
      return;
    }
    const choice = KEY_TO_CHOICE[event.key];
    if (choice) {
      event.preventDefault();
      setAnswer(state.focus, choice);
    }
  });

  el.submit.addEventListener("click", () => submit());
  [el.left, el.right].forEach((img) => img.addEventListener("load", () => markSmall(img)));
  SIDES.forEach((side) => {
    turntable.slider[side].addEventListener("input", () => {
      turntable.turning[side] = false;
      showView(side, Number(turntable.slider[side].value));
    });
    turntable.figure[side].querySelector(".viewer").addEventListener("click", () => {
      if (turntable.views > 1) turntable.turning[side] = true;
    });
  });

  // An image that cannot be loaded: the server withdraws a pair whose file is gone or broken (404), so after a
  // short pause the page asks for the next pair; after a passing network error the same pair comes back.
  [el.left, el.right].forEach((img) => img.addEventListener("error", () => {
    const broken = state.current;
    if (!broken || state.busy || !img.getAttribute("src")) return;
    state.busy = true;
    updateSubmit();
    setStatus("An image of this pair could not be loaded. Moving on to another pair…", true);
    state.next = null;
    state.nextPromise = null;
    setTimeout(() => {
      fetchNext(null).then((body) => {
        setStatus("");
        show(body.assignment, body.progress);
        preloadNext();
      }).catch((e) => setStatus(e.message, true)).finally(() => {
        state.busy = false;
        updateSubmit();
      });
    }, IMAGE_RETRY_MS);
  }));

  // Back from a break: a pair that expired meanwhile is replaced (the server would refuse its answer).
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible" || !state.current || state.busy) return;
    if (new Date(state.current.expires_at).getTime() <= Date.now()) {
      state.busy = true;
      setStatus("That pair expired while you were away. Here is a new one.");
      fetchNext(null).then((body) => {
        show(body.assignment, body.progress);
        preloadNext();
      }).catch((e) => setStatus(e.message, true)).finally(() => {
        state.busy = false;
        updateSubmit();
      });
    }
  });

  fetchNext(null).then((body) => {
    show(body.assignment, body.progress);
    preloadNext();
  }).catch((e) => {
    root.dataset.state = "error";
    setStatus(e.message, true);
  });
})();
