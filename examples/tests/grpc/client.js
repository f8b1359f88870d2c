// gRPC cases run by Node's @grpc/grpc-js (a pure-JavaScript
// implementation, from npm) against a ferropoll server:
// `node client.js TARGET PROTO_DIR CASE`. Exits 0 when the case holds;
// otherwise prints what differed and exits 1.
'use strict';
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const path = require('path');

const [target, protoDir, kase] = process.argv.slice(2);
const opts = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };
const echoPkg = grpc.loadPackageDefinition(loader.loadSync(path.join(protoDir, 'echo.proto'), opts)).echo;
const kvPkg = grpc.loadPackageDefinition(loader.loadSync(path.join(protoDir, 'kv.proto'), opts)).kv;
const creds = grpc.credentials.createInsecure();
const echo = new echoPkg.Echo(target, creds);
const kv = new kvPkg.Kv(target, creds);

function fail(what) {
  console.error(`${kase}: ${what}`);
  process.exit(1);
}
function deadline(ms) {
  return new Date(Date.now() + ms);
}
function unary(client, method, req, ms = 10000, md = new grpc.Metadata()) {
  return new Promise((resolve, reject) =>
    client[method](req, md, { deadline: deadline(ms) }, (err, res) => (err ? reject(err) : resolve(res))));
}
async function expectCode(p, code, what) {
  try {
    await p;
  } catch (e) {
    if (e.code !== code) fail(`${what}: got ${e.code} ${e.details}, wanted ${code}`);
    return e;
  }
  fail(`${what}: succeeded, wanted ${code}`);
}

async function main() {
  if (kase === 'unary') {
    for (const payload of [Buffer.from('hello'), Buffer.alloc(0), Buffer.alloc(2 << 20, 7)]) {
      const r = await unary(echo, 'Echo', { payload });
      if (!Buffer.from(r.payload).equals(payload)) fail(`echo of ${payload.length} bytes differs`);
    }
    const calls = [];
    for (let i = 0; i < 200; i++) calls.push(unary(echo, 'Echo', { payload: Buffer.from(`call ${i}`) }));
    const rs = await Promise.all(calls);
    rs.forEach((r, i) => {
      if (Buffer.from(r.payload).toString() !== `call ${i}`) fail(`concurrent call ${i}`);
    });
  } else if (kase === 'status') {
    const e = await expectCode(unary(kv, 'Get', { key: 'nope' }), grpc.status.NOT_FOUND, 'missing key');
    if (!e.details.includes('nope')) fail(`details ${e.details}`);
    await unary(kv, 'Put', { key: 'k', value: Buffer.from('v') });
    await expectCode(unary(kv, 'Put', { key: 'k', value: Buffer.from('w'), if_absent: true }),
      grpc.status.ALREADY_EXISTS, 'put if absent');
    const nope = new grpc.Client(target, creds);
    await expectCode(new Promise((resolve, reject) =>
      nope.makeUnaryRequest('/echo.Echo/Missing', (x) => x, (x) => x, Buffer.alloc(0), (err, res) =>
        (err ? reject(err) : resolve(res)))), grpc.status.UNIMPLEMENTED, 'unknown method');
  } else if (kase === 'bidi_stream') {
    const call = echo.EchoStream({ deadline: deadline(30000) });
    const got = [];
    const done = new Promise((resolve, reject) => {
      call.on('data', (r) => got.push(Buffer.from(r.payload)));
      call.on('error', reject);
      call.on('end', resolve);
    });
    const sent = [];
    for (let i = 0; i < 2000; i++) {
      const p = Buffer.alloc(100 + (i % 1000), i & 0xff);
      sent.push(p);
      call.write({ payload: p });
    }
    call.end();
    await done;
    if (got.length !== sent.length) fail(`${got.length} of ${sent.length} echoes`);
    got.forEach((g, i) => {
      if (!g.equals(sent[i])) fail(`echo ${i} differs`);
    });
  } else if (kase === 'cancel_stream') {
    for (let round = 0; round < 10; round++) {
      const call = echo.EchoStream({ deadline: deadline(30000) });
      const first = new Promise((resolve) => call.once('data', resolve));
      const ended = new Promise((resolve) => call.on('error', resolve));
      call.write({ payload: Buffer.from('first') });
      const r = await first;
      if (Buffer.from(r.payload).toString() !== 'first') fail('first echo');
      call.cancel();
      const e = await ended;
      if (e.code !== grpc.status.CANCELLED) fail(`code after cancel ${e.code}`);
    }
    const r = await unary(echo, 'Echo', { payload: Buffer.from('after') });
    if (Buffer.from(r.payload).toString() !== 'after') fail('unary after the cancels');
  } else {
    fail(`unknown case ${kase}`);
  }
  console.log(`${kase}: ok`);
  process.exit(0);
}
main().catch((e) => fail(`unexpected: ${e.stack || e}`));
