// A line diff of two safety configs (longest common subsequence), each config shown one field per
// line and its text one line per line of text, so a change inside the text shows as that line.

export function configLines(config) {
  const lines = [];
  for (const [field, value] of Object.entries(config || {})) {
    if (typeof value === "string" && value.includes("\n")) {
      lines.push(`${field}: |`);
      for (const line of value.split("\n")) lines.push(`  ${line}`);
    } else {
      lines.push(`${field}: ${JSON.stringify(value)}`);
    }
  }
  return lines;
}

const MAX_CELLS = 4_000_000; // beyond this the table would not fit in memory: show old and new whole

// [[" " | "-" | "+", line], …] turning `before` into `after`.
export function diffLines(before, after) {
  const n = before.length;
  const m = after.length;
  if (n * m > MAX_CELLS) return [...before.map((l) => ["-", l]), ...after.map((l) => ["+", l])];
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = before[i] === after[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (before[i] === after[j]) {
      out.push([" ", before[i]]);
      i++;
      j++;
    } else if (lcs[i + 1][j] >= lcs[i][j + 1]) {
      out.push(["-", before[i++]]);
    } else {
      out.push(["+", after[j++]]);
    }
  }
  while (i < n) out.push(["-", before[i++]]);
  while (j < m) out.push(["+", after[j++]]);
  return out;
}
