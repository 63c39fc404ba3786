// The panel simulator page: pick who you are, then chat with the bot through its JSON API.
// Plain JavaScript with no libraries. Message text is only ever set with textContent, so
// nothing a panellist or a survey author writes can become markup.
"use strict";

(function () {
  const API = "/simulator/api";
  const POLL_MS = 1000;
  const HIDDEN_POLL_MS = 5000; // a background tab still hears broadcasts, just less often
  const STORAGE_KEY = "panelbot-simulator-identity";
  // Addresses the server links to imported panellists; a typed name may not take one.
  const LINKED_NAME = /^panellist-\d+$/;

  const $ = (id) => document.getElementById(id);
  const el = {
    who: $("who"),
    whoName: $("who-name"),
    switchButton: $("switch"),
    identity: $("identity"),
    newForm: $("new-identity"),
    name: $("name"),
    nameHint: $("name-hint"),
    nameError: $("name-error"),
    existingForm: $("existing-identity"),
    existing: $("existing"),
    identityStatus: $("identity-status"),
    chat: $("chat"),
    messages: $("messages"),
    note: $("note"),
    quick: $("quick-replies"),
    status: $("status"),
    composer: $("composer"),
    text: $("text"),
  };
  const defaultHint = el.nameHint.textContent;

  const state = {
    address: null, // e.g. "sim:alice"
    keys: [], // one key per message shown, to append only what is new
    quickKey: null, // which message the quick replies belong to
    picked: new Set(), // a multi-choice question's options ticked so far (their replies)
    forgotten: null, // "declined" or "opted_out": the panel deleted this conversation
    pending: 0, // sends not yet answered
    sendChain: Promise.resolve(), // keeps sends in the order they were made
    sendSeq: 0, // bumped by every send, so a poll begun before it is ignored
    ticket: 0, // each fetch of the history is numbered...
    shownTicket: 0, // ...and an older answer never replaces a newer one
    timer: null,
  };

  // -- identities -------------------------------------------------------------------------

  /** A typed name as a simulator id: lower case a-z, 0-9, - and _, at most 32. */
  function slugify(name) {
    return name
      .normalize("NFKD")
      .replace(/[\u0300-\u036f]/g, "") // "Zoë" becomes "zoe"
      .toLowerCase()
      .trim()
      .replace(/\s+/g, "-")
      .replace(/[^a-z0-9_-]/g, "")
      .replace(/-{2,}/g, "-")
      .slice(0, 32)
      .replace(/^[-_]+|[-_]+$/g, "");
  }

  function showNameError(message) {
    el.nameError.textContent = message;
    el.nameError.hidden = !message;
    if (message) {
      el.name.setAttribute("aria-invalid", "true");
    } else {
      el.name.removeAttribute("aria-invalid");
    }
  }

  async function loadIdentities() {
    let data;
    try {
      const response = await fetch(API + "/identities", { cache: "no-store" });
      if (!response.ok) throw new Error(String(response.status));
      data = await response.json();
    } catch (err) {
      el.existingForm.hidden = true;
      return;
    }
    const onSimulator = document.createElement("optgroup");
    onSimulator.label = "On the simulator";
    const imported = document.createElement("optgroup");
    imported.label = "Panellists";
    for (const identity of data.identities || []) {
      const option = document.createElement("option");
      option.textContent = identity.label;
      if (identity.address) {
        option.value = identity.address;
        onSimulator.appendChild(option);
      } else {
        option.value = "panellist:" + identity.panellist_id;
        imported.appendChild(option);
      }
    }
    el.existing.replaceChildren();
    for (const group of [onSimulator, imported]) {
      if (group.children.length) el.existing.appendChild(group);
    }
    el.existingForm.hidden = el.existing.options.length === 0;
  }

  el.name.addEventListener("input", () => {
    const slug = slugify(el.name.value);
    el.nameHint.textContent = slug ? "You will chat as sim:" + slug : defaultHint;
    showNameError("");
  });

  el.newForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const slug = slugify(el.name.value);
    if (!slug) {
      showNameError("Enter a name using letters a to z or numbers.");
      el.name.focus();
      return;
    }
    if (LINKED_NAME.test(slug)) {
      showNameError("Names like " + slug + " are kept for panellists; choose another.");
      el.name.focus();
      return;
    }
    // The name becomes this browser's (another browser's is refused), before any message.
    try {
      const response = await fetch(API + "/identities", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name: slug }),
      });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) {
        showNameError(data.error || "That name cannot be used just now.");
        el.name.focus();
        return;
      }
      startChat(data.address, data.label);
    } catch (err) {
      showNameError("Could not reach the panel. Try again.");
    }
  });

  el.existingForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = el.existing.value;
    if (!value) return;
    if (!value.startsWith("panellist:")) {
      startChat(value, value.slice("sim:".length));
      return;
    }
    el.identityStatus.textContent = "Linking…";
    try {
      const response = await fetch(API + "/identities", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ panellist_id: Number(value.slice("panellist:".length)) }),
      });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) {
        el.identityStatus.textContent = data.error || "That panellist cannot be used just now.";
        return;
      }
      el.identityStatus.textContent = "";
      startChat(data.address, data.label);
    } catch (err) {
      el.identityStatus.textContent = "Could not reach the panel. Try again.";
    }
  });

  el.switchButton.addEventListener("click", () => {
    stopPolling();
    state.address = null;
    forget();
    el.chat.hidden = true;
    el.who.hidden = true;
    el.switchButton.hidden = true;
    el.identity.hidden = false;
    loadIdentities();
    el.name.focus();
  });

  function remember(address, label) {
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify({ address, label }));
    } catch (err) {
      // Private browsing may refuse storage; the page works without it.
    }
  }

  function forget() {
    try {
      localStorage.removeItem(STORAGE_KEY);
    } catch (err) {
      // As above.
    }
  }

  function remembered() {
    try {
      const saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
      if (saved && typeof saved.address === "string" && saved.address.startsWith("sim:")) {
        return saved;
      }
    } catch (err) {
      // Unreadable or refused: start afresh.
    }
    return null;
  }

  /** The remembered person is not this browser's: back to the identity screen. */
  function lostAccess(address) {
    stopPolling();
    state.address = null;
    state.forgotten = null;
    forget();
    el.chat.hidden = true;
    el.who.hidden = true;
    el.switchButton.hidden = true;
    el.identity.hidden = false;
    el.identityStatus.textContent =
      "This browser can no longer open the conversation as " +
      address +
      " (its cookie was cleared, or the name is another browser's). Choose a name to start again.";
    loadIdentities();
    el.name.focus();
  }

  // -- the conversation -------------------------------------------------------------------

  function startChat(address, label) {
    state.address = address;
    state.keys = [];
    state.quickKey = null;
    el.messages.replaceChildren();
    renderQuickReplies(null);
    state.forgotten = null;
    showNote(null);
    el.status.textContent = "";
    el.identityStatus.textContent = "";
    el.whoName.textContent = label || address;
    el.who.hidden = false;
    el.switchButton.hidden = false;
    el.identity.hidden = true;
    el.chat.hidden = false;
    remember(address, label);
    el.text.focus();
    refresh(true).then(schedulePoll);
  }

  function timeText(at) {
    const when = new Date(at);
    if (Number.isNaN(when.getTime())) return "";
    return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function messageItem(message, pending) {
    const fromPanel = message.direction === "out";
    const item = document.createElement("li");
    item.className = "msg " + (fromPanel ? "msg-out" : "msg-in") + (pending ? " msg-pending" : "");
    const who = document.createElement("span");
    who.className = "visually-hidden";
    who.textContent = fromPanel ? "Panel said:" : "You said:";
    const bubble = document.createElement("p");
    bubble.className = "bubble";
    // Each bubble finds its own direction from its text: Urdu right to left, English left
    // to right, in the same conversation.
    bubble.dir = "auto";
    bubble.textContent = message.text;
    item.append(who, bubble);
    if (message.at) {
      const time = document.createElement("time");
      time.className = "msg-time";
      time.dateTime = message.at;
      time.textContent = timeText(message.at);
      item.appendChild(time);
      if (fromPanel && message.sms) {
        // What this message would cost as an SMS: its encoding and segment count.
        const sms = document.createElement("span");
        sms.className = "msg-time msg-sms";
        const parts = message.sms.segments === 1 ? "1 segment" : message.sms.segments + " segments";
        sms.textContent = "SMS: " + message.sms.encoding + ", " + parts;
        item.appendChild(sms);
      }
    } else if (pending) {
      const time = document.createElement("span");
      time.className = "msg-time";
      time.textContent = "Sending…";
      item.appendChild(time);
    }
    return item;
  }

  function keyOf(message) {
    return message.direction + "\u0000" + message.at + "\u0000" + message.text;
  }

  function nearBottom() {
    const list = el.messages;
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function scrollToBottom() {
    el.messages.scrollTop = el.messages.scrollHeight;
  }

  /** Bring the newest message into view: all of it, or its start if it is taller than the
   *  list (a long question is read from the top). */
  function scrollToNewest() {
    scrollToBottom();
    const last = el.messages.lastElementChild;
    if (!last) return;
    const list = el.messages.getBoundingClientRect();
    const box = last.getBoundingClientRect();
    if (box.height > list.height) el.messages.scrollTop += box.top - list.top;
  }

  /** Say, above the conversation, why it was deleted (after a no or a STOP before joining). */
  function showNote(forgotten) {
    const notes = {
      declined:
        "You said no to joining, so the panel deleted this conversation and keeps only a " +
        "scrambled (hashed) form of your address. What you write now is not kept either. " +
        "Send START (or YES) to join after all.",
      opted_out:
        "You sent STOP before joining, so the panel deleted this conversation and keeps " +
        "only a scrambled (hashed) form of your address. It will not answer now, except to " +
        "HELP. Send START to join after all.",
    };
    const text = notes[forgotten] || "";
    el.note.textContent = text;
    el.note.hidden = !text;
  }

  /** Show the server's history: append what is new; redraw only if the past changed. */
  function renderMessages(messages, forgotten) {
    // After a no before joining the panel keeps nothing, so its history is empty: keep the
    // answer the page was handed with the message (forgotten()) until something new comes.
    const localOnly = state.keys.length > 0 && state.keys.every((key) => key === "local");
    if (localOnly && messages.length === 0) {
      state.forgotten = forgotten || state.forgotten;
      showNote(state.forgotten);
      return;
    }
    const keys = messages.map(keyOf);
    const opening = state.keys.length === 0 && !el.messages.querySelector(".msg:not(.msg-pending)");
    const stick = opening || nearBottom();
    const firstPending = el.messages.querySelector(".msg-pending");
    const samePast =
      keys.length >= state.keys.length && state.keys.every((key, i) => key === keys[i]);
    if (!samePast) {
      for (const item of Array.from(el.messages.children)) {
        if (!item.classList.contains("msg-pending")) item.remove();
      }
      state.keys = [];
    }
    for (let i = state.keys.length; i < messages.length; i++) {
      el.messages.insertBefore(messageItem(messages[i], false), firstPending);
    }
    const grew = keys.length !== state.keys.length || !samePast;
    state.keys = keys;
    state.forgotten = forgotten || null;
    showNote(state.forgotten);
    const last = messages[messages.length - 1];
    const offer = last && last.direction === "out" && (last.options || []).length ? last : null;
    // The buttons first: they take room from the list, and the newest message must stay in
    // view above them (on opening or resuming a conversation too).
    renderQuickReplies(offer);
    if (grew && stick) scrollToNewest();
  }

  function optionText(option) {
    const reply = String(option.reply);
    const label = String(option.label || "");
    // "YES" labelled "Yes" or a scale's "3" labelled "3" need saying only once.
    if (!label || label.toLowerCase() === reply.toLowerCase()) return label || reply;
    return reply + " " + label;
  }

  /** Buttons for the latest bot message's options; redrawn only when that message changes,
   *  so a poll never takes keyboard focus away from a button. */
  function renderQuickReplies(message) {
    const key = message ? keyOf(message) : null;
    if (key === state.quickKey) return;
    const hadFocus = el.quick.contains(document.activeElement);
    state.quickKey = key;
    state.picked = new Set();
    el.quick.replaceChildren();
    el.quick.hidden = key === null;
    if (key === null) {
      if (hadFocus) el.text.focus(); // no choices left: typing is what comes next
      return;
    }
    if (message.multi) {
      renderMultiChoice(message);
      if (hadFocus) el.quick.firstElementChild.focus();
      return;
    }
    for (const option of message.options) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "quick-reply";
      button.dir = "auto";
      button.textContent = optionText(option);
      if (state.pending > 0) button.setAttribute("aria-disabled", "true");
      button.addEventListener("click", () => {
        // One tap answers; a second tap before the reply would answer the next question.
        if (button.getAttribute("aria-disabled") !== "true") send(String(option.reply));
      });
      el.quick.appendChild(button);
    }
    if (hadFocus) el.quick.firstElementChild.focus();
  }

  /** A multi-choice question: each option is a toggle (aria-pressed), and Send sends every
   *  ticked one together ("1 3"), in the question's order. */
  function renderMultiChoice(message) {
    const toggles = [];
    const sendButton = document.createElement("button");
    sendButton.type = "button";
    sendButton.className = "quick-reply quick-send";
    sendButton.textContent = message.send_label || "Send";
    const update = () => {
      const none = state.picked.size === 0;
      // Nothing ticked yet: Send waits (aria-disabled keeps it focusable and announced).
      if (none || state.pending > 0) sendButton.setAttribute("aria-disabled", "true");
      else sendButton.removeAttribute("aria-disabled");
    };
    for (const option of message.options) {
      const reply = String(option.reply);
      const button = document.createElement("button");
      button.type = "button";
      button.className = "quick-reply quick-toggle";
      button.dir = "auto";
      button.textContent = optionText(option);
      button.setAttribute("aria-pressed", "false");
      button.addEventListener("click", () => {
        if (button.getAttribute("aria-disabled") === "true") return;
        if (state.picked.has(reply)) state.picked.delete(reply);
        else state.picked.add(reply);
        button.setAttribute("aria-pressed", String(state.picked.has(reply)));
        update();
      });
      toggles.push(button);
      el.quick.appendChild(button);
    }
    sendButton.addEventListener("click", () => {
      if (sendButton.getAttribute("aria-disabled") === "true") return;
      const chosen = message.options.map((o) => String(o.reply)).filter((r) => state.picked.has(r));
      send(chosen.join(" "));
    });
    el.quick.appendChild(sendButton);
    if (state.pending > 0) for (const button of toggles) button.setAttribute("aria-disabled", "true");
    update();
  }

  /** While a message is on its way the buttons stay (and keep focus) but do nothing. */
  function setQuickBusy(busy) {
    for (const button of el.quick.children) {
      const idleSend = button.classList.contains("quick-send") && state.picked.size === 0;
      if (busy || idleSend) {
        button.setAttribute("aria-disabled", "true");
      } else {
        button.removeAttribute("aria-disabled");
      }
    }
  }

  async function refresh(force) {
    const address = state.address;
    if (!address) return;
    if (state.pending > 0 && !force) return; // the send refreshes when it is answered
    const seq = state.sendSeq;
    const ticket = ++state.ticket;
    let data;
    try {
      const response = await fetch(
        API + "/messages?address=" + encodeURIComponent(address),
        { cache: "no-store" },
      );
      if (response.status === 404) {
        // Not this browser's (any more): its cookie was lost or cleared. Polling would
        // only fail for ever; go back to choosing who to be, and say why.
        if (address === state.address) lostAccess(address);
        return;
      }
      if (!response.ok) throw new Error(String(response.status));
      data = await response.json();
    } catch (err) {
      if (address === state.address) {
        el.status.textContent = "Cannot reach the panel just now; trying again…";
      }
      return;
    }
    if (address !== state.address || ticket < state.shownTicket) return;
    // A poll that began before a send would briefly show the message twice.
    if (!force && (seq !== state.sendSeq || state.pending > 0)) return;
    state.shownTicket = ticket;
    if (el.status.textContent.startsWith("Cannot reach")) el.status.textContent = "";
    renderMessages(data.messages || [], data.forgotten);
  }

  function schedulePoll() {
    stopPolling();
    if (!state.address) return;
    const wait = document.hidden ? HIDDEN_POLL_MS : POLL_MS;
    state.timer = setTimeout(async () => {
      await refresh(false);
      schedulePoll();
    }, wait);
  }

  function stopPolling() {
    clearTimeout(state.timer);
    state.timer = null;
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.address) refresh(false).then(schedulePoll);
  });

  /** Send one message as the current identity; sends go out in the order they were made. */
  function send(text) {
    const address = state.address;
    text = text.trim();
    if (!address || !text) return Promise.resolve(false);
    state.pending++;
    state.sendSeq++;
    setQuickBusy(true);
    const item = messageItem({ direction: "in", text: text, at: null }, true);
    // Screen readers hear the message once, when the panel has it, not twice.
    item.setAttribute("aria-hidden", "true");
    el.messages.appendChild(item);
    scrollToBottom();
    el.status.textContent = "";
    const done = state.sendChain.then(() => post(address, text));
    state.sendChain = done.catch(() => false);
    return done.finally(async () => {
      state.pending--;
      item.remove();
      if (address === state.address) {
        await refresh(true);
        scrollToNewest();
      }
      if (state.pending === 0) setQuickBusy(false);
    });
  }

  async function post(address, text) {
    try {
      const response = await fetch(API + "/messages", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ from: address, text: text }),
      });
      const data = await response.json().catch(() => ({}));
      if (response.ok) {
        if (data.forgotten && address === state.address) forgotten(data);
        return true;
      }
      el.status.textContent = data.error || "The panel could not take that message.";
    } catch (err) {
      el.status.textContent = "Could not reach the panel; your message was not sent.";
    }
    return false;
  }

  /** The message just sent ended the conversation (a no before joining) and the panel
   *  deleted it: show that, and the panel's answer, instead of an empty history. */
  function forgotten(data) {
    state.forgotten = data.forgotten;
    for (const item of Array.from(el.messages.children)) {
      if (!item.classList.contains("msg-pending")) item.remove();
    }
    const at = new Date().toISOString();
    for (const text of data.replies || []) {
      el.messages.appendChild(messageItem({ direction: "out", text: text, at: at }, false));
    }
    // Matches no history from the panel, so the next one shown replaces these.
    state.keys = (data.replies || []).map(() => "local");
    renderQuickReplies(null);
    showNote(state.forgotten);
  }

  el.composer.addEventListener("submit", async (event) => {
    event.preventDefault(); // Enter in the input submits the form too
    const text = el.text.value;
    if (!text.trim()) return;
    el.text.value = "";
    const sent = await send(text);
    // Give back what could not be sent, unless they have started typing something else.
    if (!sent && !el.text.value) el.text.value = text;
  });

  // -- start ------------------------------------------------------------------------------

  const saved = remembered();
  if (saved) {
    startChat(saved.address, saved.label);
  } else {
    el.identity.hidden = false;
  }
  loadIdentities();
})();
