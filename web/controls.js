// Settings controls built from the server's JSON schema, so the page never hard-codes bounds:
// enum -> <select>, boolean -> checkbox, bounded number -> range (+ value), wide integer -> number
// input, plain string -> text input. Each control reports a one-field partial through onChange.

const PRIMARY = ["mode", "strength", "seed"]; // shown first; the rest go under "More settings"
const SKIP = new Set(["prompt"]); // the prompt has its own box
const THROTTLE_MS = 120; // range drags send at most ~8 updates a second per field

function niceStep(schema) {
  if (schema.multipleOf) return schema.multipleOf;
  if (schema.type === "integer") return 1;
  const span = schema.maximum - schema.minimum;
  const raw = span / 100;
  const pow = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw);
}

function decimals(step) {
  const text = String(step);
  return text.includes(".") ? text.split(".")[1].length : 0;
}

function parseValue(schema, raw) {
  if (schema.type === "integer") return Number.parseInt(raw, 10);
  if (schema.type === "number") return Number.parseFloat(raw);
  return raw;
}

/** One labelled control for one schema property; returns {row, get(), set(value)}. */
function makeControl(name, schema, send) {
  const row = document.createElement("div");
  row.className = "control";
  row.dataset.field = name;
  const label = document.createElement("label");
  label.htmlFor = `setting-${name}`;
  label.textContent = schema.title || name;
  if (schema.description) row.title = schema.description;
  row.append(label);

  const id = `setting-${name}`;
  const bounded = schema.minimum !== undefined && schema.maximum !== undefined;

  if (Array.isArray(schema.enum)) {
    const select = document.createElement("select");
    select.id = id;
    for (const option of schema.enum) select.add(new Option(String(option), String(option)));
    select.addEventListener("change", () => send({ [name]: schema.enum[select.selectedIndex] }));
    row.append(select);
    return { row, input: select, set: (v) => (select.value = String(v)) };
  }

  if (schema.type === "boolean") {
    const box = document.createElement("input");
    box.type = "checkbox";
    box.id = id;
    box.addEventListener("change", () => send({ [name]: box.checked }));
    row.classList.add("control-checkbox");
    row.prepend(box);
    return { row, input: box, set: (v) => (box.checked = Boolean(v)) };
  }

  const isNumber = schema.type === "number" || schema.type === "integer";
  const useRange = isNumber && bounded && (schema.type === "number" || schema.maximum - schema.minimum <= 4096);

  if (useRange) {
    const step = niceStep(schema);
    const range = document.createElement("input");
    range.type = "range";
    range.id = id;
    range.min = schema.minimum;
    range.max = schema.maximum;
    range.step = step;
    const output = document.createElement("output");
    output.htmlFor = id;
    output.id = `${id}-value`;
    const show = () => (output.textContent = Number(range.value).toFixed(decimals(step)));
    let timer = null;
    let lastSent = 0;
    const flush = () => {
      timer = null;
      lastSent = performance.now();
      send({ [name]: parseValue(schema, range.value) });
    };
    range.addEventListener("input", () => {
      show();
      if (timer) return;
      const wait = Math.max(0, THROTTLE_MS - (performance.now() - lastSent));
      timer = setTimeout(flush, wait);
    });
    row.append(range, output);
    return {
      row,
      input: range,
      set: (v) => {
        range.value = v;
        show();
      },
    };
  }

  const input = document.createElement("input");
  input.id = id;
  if (isNumber) {
    input.type = "number";
    input.inputMode = schema.type === "integer" ? "numeric" : "decimal";
    if (schema.minimum !== undefined) input.min = schema.minimum;
    if (schema.maximum !== undefined) input.max = schema.maximum;
    input.step = schema.multipleOf || (schema.type === "integer" ? 1 : "any");
  } else {
    input.type = "text";
    if (schema.maxLength) input.maxLength = schema.maxLength;
  }
  input.addEventListener("change", () => {
    const value = parseValue(schema, input.value);
    if (isNumber && Number.isNaN(value)) return;
    send({ [name]: value });
  });
  row.append(input);
  if (name === "seed" && bounded) {
    const dice = document.createElement("button");
    dice.type = "button";
    dice.id = "seed-random";
    dice.textContent = "random";
    dice.title = "Pick a random seed";
    dice.addEventListener("click", () => {
      const value = schema.minimum + Math.floor(Math.random() * (schema.maximum - schema.minimum + 1));
      input.value = value;
      send({ [name]: value });
    });
    row.append(dice);
  }
  return { row, input, set: (v) => (input.value = v) };
}

/**
 * Build controls for every simple property of `schema` into `primaryEl` / `moreEl`.
 * Returns {set(settings, {force}), names}. `set` leaves the control the user is touching alone
 * unless force is true (used to roll back refused values).
 */
export function buildControls(schema, primaryEl, moreEl, onChange) {
  const controls = new Map();
  const properties = schema.properties || {};
  const names = [...PRIMARY.filter((n) => n in properties), ...Object.keys(properties).filter((n) => !PRIMARY.includes(n))];
  for (const name of names) {
    if (SKIP.has(name)) continue;
    const prop = properties[name];
    const simple = Array.isArray(prop.enum) || ["boolean", "number", "integer", "string"].includes(prop.type);
    if (!simple) continue;
    const control = makeControl(name, prop, onChange);
    (PRIMARY.includes(name) ? primaryEl : moreEl).append(control.row);
    controls.set(name, control);
  }
  return {
    names: [...controls.keys()],
    set(settings, { force = false } = {}) {
      for (const [name, control] of controls) {
        if (!(name in settings)) continue;
        if (!force && document.activeElement === control.input && control.input.type !== "checkbox") continue;
        control.set(settings[name]);
      }
    },
  };
}
