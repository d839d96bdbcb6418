#!/usr/bin/env node
// Parses bytes captured on the printer side of a link with npos, an ESC/POS parser we did not
// write, so the printer driver's tests do not check its output against its own understanding.
//
//   node tests/escpos/parse.js CAPTURE_FILE OUT_DIR
//
// Prints one JSON object on stdout:
//   {"jobs": [{"commands", "codepage", "text", "lines", "native_qr", "rasters", "cut",
//              "bytes"}, ...],
//    "status_queries": N}
// A job starts at each `ESC @` (bytes before the first one form a job of their own only when
// they hold more than status queries). Commands read like "ESC t 19", "GS ! 51", "DLE EOT 4":
// the parameter bytes in decimal; for commands carrying data only the selector is shown
// ("GS ( k 49 80" = cn fn, "GS v 0 3" = m, "GS V 66" = m, "GS k 73" = m). Text is decoded by
// the code page selected when it was sent (ESC @ selects 0 again, as on the printer). Every
// `GS v 0` image is written to OUT_DIR as a PGM (black 0, white 255), scaled by its m factor
// and 4 more, with a 32 px white border, for zbarimg. Any error: exit code 2, message on stderr.
'use strict';

// npos (2017) uses `new Buffer`; its deprecation warning would only clutter error output.
process.noDeprecation = true;

const fs = require('fs');
const path = require('path');
const npos = require('npos');
const iconv = require('iconv-lite');

// ESC t n -> iconv-lite encoding.
const CODE_PAGES = { 0: 'cp437', 2: 'cp850', 16: 'windows-1252', 19: 'cp858' };
const NAMES = { 0x10: 'DLE', 0x1b: 'ESC', 0x1c: 'FS', 0x1d: 'GS' };
const SCALE = 4;
const BORDER = 32;

// npos's own rules plus GS ( k (2D codes), which it lacks: pL pH cn fn [parameters].
function rules() {
  const copy = JSON.parse(JSON.stringify(require('npos/lib/parser/rules.js')));
  copy[0x1d]['(k'] = [0, 'd16'];
  return copy;
}

// npos's splitter for GS V wants 2 bytes even for the 1-byte forms (m = 0, 1, 48, 49) and
// returns the whole buffer length when they are the last bytes of the capture, so the most
// common cut, `GS V 0` at the end, would read past the end. Same rule, without that slip.
function gsV(buf, offset) {
  if (offset >= buf.length) return 1; // m is missing: reported as truncated
  const m = buf[offset];
  return m === 0 || m === 1 || m === 48 || m === 49 ? 1 : 2;
}

// How many bytes the rule of `node` consumes after GS/ESC/... and the function name (the
// parser adds any NUL bytes that follow a command to the node; those are not parameters).
// Returns [ruleLength, paramBytes to show].
function describe(raw, node, rule) {
  const splitters = require('npos/lib/parser/splitters.js');
  const start = node.offset + 1 + node.fn.length;
  let offset = start;
  const shown = [];
  for (const part of Array.isArray(rule) ? rule : [rule]) {
    if (typeof part === 'number') {
      for (let i = 0; i < part; i++) shown.push(raw[offset + i]);
      offset += part;
      continue;
    }
    const here = offset;
    offset += (part === 'gsV' ? gsV : splitters[part])(raw, offset);
    if (part === 'd16' || part === 'd32') {
      // pL pH [pH2 pH3] then cn fn (or a, the first data bytes): show the selectors.
      const lengthBytes = part === 'd16' ? 2 : 4;
      for (let i = here + lengthBytes; i < Math.min(offset, here + lengthBytes + 2); i++) {
        shown.push(raw[i]);
      }
    } else if (part === 'gsV' || part === 'gsk' || part === 'bitimage') {
      // The mode byte m only (GS V: not the feed amount n).
      shown.push(raw[here]);
    }
  }
  return [offset - node.offset, shown];
}

function fnName(fn) {
  const parts = [];
  for (const ch of fn) {
    const code = ch.charCodeAt(0);
    parts.push(code > 0x20 && code < 0x7f ? ch : require('npos/lib/parser/ascii.js')[code]);
  }
  return parts.join(' ');
}

// One GS v 0 image (decoded by npos) as a PGM, scaled and with a border.
function writeRaster(raw, node, file) {
  const mode = raw[node.offset + 3];
  const m = mode >= 48 ? mode - 48 : mode;
  if (m > 3) throw new Error(`GS v 0 at offset ${node.offset}: bad mode ${mode}`);
  // A fresh node per image: npos's decoder, given several, uses the widest width for all.
  const probe = { offset: node.offset };
  const bitmap = npos.codecs.raster.decode(raw, [probe]);
  if (probe.error) throw new Error(`GS v 0 at offset ${node.offset}: ${probe.error}`);
  const width = bitmap.getWidth();
  const height = bitmap.getHeight();
  const sx = (m & 1 ? 2 : 1) * SCALE;
  const sy = (m & 2 ? 2 : 1) * SCALE;
  const outW = width * sx + 2 * BORDER;
  const outH = height * sy + 2 * BORDER;
  const pixels = Buffer.alloc(outW * outH, 255);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (bitmap.getPixel(x, y) !== 0) continue; // 0 = black dot
      for (let dy = 0; dy < sy; dy++) {
        const rowStart = (BORDER + y * sy + dy) * outW + BORDER + x * sx;
        pixels.fill(0, rowStart, rowStart + sx);
      }
    }
  }
  fs.writeFileSync(file, Buffer.concat([Buffer.from(`P5\n${outW} ${outH}\n255\n`), pixels]));
  return { mode: m, width, height };
}

function newJob() {
  return {
    commands: [],
    codepage: null,
    text: '',
    lines: [],
    native_qr: [],
    rasters: [],
    cut: false,
    bytes: 0,
    start: null,
    onlyStatus: true,
  };
}

async function main(argv) {
  if (argv.length !== 2) throw new Error('usage: node parse.js CAPTURE_FILE OUT_DIR');
  const [captureFile, outDir] = argv;
  const raw = fs.readFileSync(captureFile);
  fs.mkdirSync(outDir, { recursive: true });

  const ruleSet = rules();
  const parser = npos.parser({ ...ruleSet, [0x1d]: { ...ruleSet[0x1d], V: [0, gsV] } });
  // analyze() first: parse() rewrites the offsets of GS v 0 nodes while decoding them.
  const ast = parser.analyze(raw);
  if (ast.error) throw ast.error;
  const nodes = ast.tree.map((node) => ({ ...node }));
  await parser.parse(ast); // runs npos's codecs over the same tree: fails on what they reject

  const jobs = [];
  let job = newJob();
  let codePage = 0;
  let statusQueries = 0;
  const finish = (end) => {
    if (job.start === null) return;
    job.bytes = end - job.start;
    if (!(jobs.length === 0 && job.commands[0] !== 'ESC @' && job.onlyStatus)) jobs.push(job);
  };

  for (const node of nodes) {
    if (node.offset + node.length > raw.length) {
      throw new Error(`truncated command at offset ${node.offset} of ${raw.length}`);
    }
    if (node.ascii === 'STX') {
      if (job.start === null) job.start = node.offset;
      job.onlyStatus = false;
      const encoding = CODE_PAGES[codePage];
      if (!encoding) throw new Error(`text at offset ${node.offset} in unknown code page ${codePage}`);
      job.text += iconv.decode(raw.slice(node.offset, node.offset + node.length), encoding);
      continue;
    }
    const name = NAMES[node.code];
    if (!name || node.fn === undefined) {
      throw new Error(`unexpected command byte 0x${node.code.toString(16)} at offset ${node.offset}`);
    }
    const rule = ruleSet[node.code][node.fn];
    const [ruleLength, params] = describe(raw, node, rule);
    if (node.offset + ruleLength > raw.length) {
      throw new Error(`truncated ${name} ${fnName(node.fn)} at offset ${node.offset} of ${raw.length}`);
    }
    const command = [name, fnName(node.fn), ...params].join(' ');

    if (command === 'ESC @') {
      finish(node.offset);
      job = newJob();
      codePage = 0;
    }
    if (job.start === null) job.start = node.offset;
    job.commands.push(command);

    if (name === 'DLE' && node.fn === '\x04') {
      statusQueries += 1;
      continue;
    }
    job.onlyStatus = false;
    if (name === 'ESC' && node.fn === 't') {
      codePage = params[0];
      job.codepage = codePage;
    } else if (name === 'GS' && node.fn === 'V') {
      job.cut = true;
    } else if (name === 'GS' && node.fn === '(k' && params[0] === 49 && params[1] === 80) {
      // pL pH cn=49 fn=80 m=48 d1..dk
      const dataLength = raw.readUInt16LE(node.offset + 3) - 3;
      const dataStart = node.offset + 8;
      job.native_qr.push(raw.slice(dataStart, dataStart + dataLength).toString('utf8'));
    } else if (name === 'GS' && node.fn === 'v0') {
      const file = path.resolve(outDir, `job${jobs.length + 1}-raster${job.rasters.length + 1}.pgm`);
      writeRaster(raw, node, file);
      job.rasters.push(file);
    }
  }
  finish(raw.length);

  const out = jobs.map(({ start, onlyStatus, ...rest }) => ({ ...rest, lines: rest.text.split('\n') }));
  process.stdout.write(JSON.stringify({ jobs: out, status_queries: statusQueries }) + '\n');
}

main(process.argv.slice(2)).catch((error) => {
  process.stderr.write(`parse.js: ${error && error.message ? error.message : error}\n`);
  process.exit(2);
});
