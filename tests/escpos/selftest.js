#!/usr/bin/env node
// Self-test of parse.js on a capture built by hand: `node tests/escpos/selftest.js`.
'use strict';

process.noDeprecation = true;

const assert = require('assert');
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const iconv = require('iconv-lite');

const ESC = 0x1b;
const GS = 0x1d;
const DLE = 0x10;

function gsk(cn, fn, data) {
  const length = 2 + data.length;
  return Buffer.concat([Buffer.from([GS, 0x28, 0x6b, length & 0xff, length >> 8, cn, fn]), data]);
}

// 16 x 16 dots: the left half black, the top-right quarter white, the bottom-right one black.
const raster = [];
for (let y = 0; y < 16; y++) raster.push(0xff, y < 8 ? 0x00 : 0xff);

const capture = Buffer.concat([
  Buffer.from([DLE, 0x04, 0x04]), // a status query before the job is not a job
  Buffer.from([ESC, 0x40, ESC, 0x74, 19]),
  iconv.encode('Grüße\n', 'cp858'),
  gsk(49, 80, Buffer.concat([Buffer.from([48]), Buffer.from('HELLO')])),
  gsk(49, 81, Buffer.from([48])),
  Buffer.from([GS, 0x76, 0x30, 3, 2, 0, 16, 0]),
  Buffer.from(raster),
  Buffer.from([GS, 0x56, 66, 0]),
  Buffer.from([DLE, 0x04, 0x01]),
  Buffer.from([ESC, 0x40, ESC, 0x74, 2]),
  iconv.encode('Öl', 'cp850'), // no newline
  Buffer.from([GS, 0x56, 0]), // the 1-byte form of the cut as the very last bytes
]);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'escpos-selftest-'));
const parse = path.join(__dirname, 'parse.js');
try {
  const file = path.join(dir, 'capture.bin');
  fs.writeFileSync(file, capture);
  const run = spawnSync(process.execPath, [parse, file, path.join(dir, 'out')], { encoding: 'utf8' });
  assert.strictEqual(run.status, 0, run.stderr);
  const result = JSON.parse(run.stdout);
  assert.strictEqual(result.status_queries, 2);
  assert.strictEqual(result.jobs.length, 2);
  const [job, second] = result.jobs;
  assert.deepStrictEqual(job.commands, [
    'ESC @',
    'ESC t 19',
    'GS ( k 49 80',
    'GS ( k 49 81',
    'GS v 0 3',
    'GS V 66',
    'DLE EOT 1',
  ]);
  assert.strictEqual(job.codepage, 19);
  assert.strictEqual(job.text, 'Grüße\n');
  assert.deepStrictEqual(job.lines, ['Grüße', '']);
  assert.deepStrictEqual(job.native_qr, ['HELLO']);
  assert.strictEqual(job.cut, true);
  assert.strictEqual(job.bytes, capture.length - 3 - 10);
  assert.strictEqual(job.rasters.length, 1);
  const pgm = fs.readFileSync(job.rasters[0]);
  const header = 'P5\n192 192\n255\n'; // 16 dots x 2 (m=3) x 4, plus 2 x 32 border
  assert.strictEqual(pgm.subarray(0, header.length).toString(), header);
  const pixel = (x, y) => pgm[header.length + y * 192 + x];
  assert.strictEqual(pixel(0, 0), 255); // border
  assert.strictEqual(pixel(32, 32), 0); // left half
  assert.strictEqual(pixel(32 + 63, 32 + 127), 0);
  assert.strictEqual(pixel(32 + 64, 32), 255); // top right
  assert.strictEqual(pixel(32 + 64, 32 + 63), 255);
  assert.strictEqual(pixel(32 + 64, 32 + 64), 0); // bottom right
  assert.strictEqual(pixel(32 + 128, 32 + 128), 255); // border
  assert.deepStrictEqual(second.commands, ['ESC @', 'ESC t 2', 'GS V 0']);
  assert.strictEqual(second.text, 'Öl');
  assert.strictEqual(second.cut, true);
  assert.strictEqual(second.bytes, 10);

  // An unknown command is an error, not text.
  fs.writeFileSync(file, Buffer.from([ESC, 0x40, ESC, 0xff, 0x41]));
  const bad = spawnSync(process.execPath, [parse, file, path.join(dir, 'out')], { encoding: 'utf8' });
  assert.strictEqual(bad.status, 2, bad.stdout);
  assert.match(bad.stderr, /Can not parse commands/);
  // So is a command cut off by the end of the capture.
  fs.writeFileSync(file, Buffer.from([ESC, 0x40, GS, 0x76, 0x30, 0, 2, 0, 16, 0, 0xff]));
  const short = spawnSync(process.execPath, [parse, file, path.join(dir, 'out')], { encoding: 'utf8' });
  assert.strictEqual(short.status, 2, short.stdout);
  assert.match(short.stderr, /truncated/);
  console.log('selftest: ok');
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
