// Notices: each warning once, as one plain sentence; its technical detail opens on a tap (<details>).
// The server's come as /api/settings `server.notices` ({summary, detail}); the page's own (no microphone, a
// camera that cannot switch...) are made here from call.js's warning text.

/** Render `notices` ({summary, detail}) into the list `box`; the same sentence twice shows once. */
export function renderNotices(box, notices) {
  const seen = new Set();
  const items = [];
  for (const { summary, detail } of notices) {
    const key = `${summary}\n${detail}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const li = document.createElement("li");
    if (detail && detail !== summary) {
      const details = document.createElement("details");
      const head = document.createElement("summary");
      head.textContent = summary;
      const more = document.createElement("p");
      more.className = "detail";
      more.textContent = detail;
      details.append(head, more);
      li.append(details);
    } else {
      const line = document.createElement("p");
      line.className = "summary";
      line.textContent = summary;
      li.append(line);
    }
    items.push(li);
  }
  box.replaceChildren(...items);
  box.hidden = items.length === 0;
}

/** True when `message` is nothing but the server's `warnings` joined (its status repeats them). */
export function isOnlyWarnings(message, warnings) {
  if (!warnings.length) return false;
  let rest = message;
  for (const warning of warnings) rest = rest.split(warning).join("");
  return rest.replace(/[;\s]/g, "") === "";
}

// call.js / app.js warnings, in their words -> a sentence a person reads.
const CALL_NOTICES = [
  [/^no microphone/, "No microphone: voice prompts are off for this call; type your prompt instead"],
  [/^no ICE server list/, "Connecting directly: the server's list of relays didn't load"],
  [/^cannot switch camera|^camera switch failed/, "Couldn't switch to the other camera"],
  [/^could not apply the server's send hint/, "Couldn't slow the camera down as the server asked"],
  [/^server sent a message that is not JSON/, "The server sent something this page doesn't understand"],
  [/^server settings:/, "Couldn't reach the server to see if the painter is ready"],
];

/** {summary, detail} for one warning text of the page's own. */
export function callNotice(text) {
  for (const [pattern, summary] of CALL_NOTICES) if (pattern.test(text)) return { summary, detail: text };
  return { summary: text, detail: "" };
}
