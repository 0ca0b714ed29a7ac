'use strict'
// Checks that the Node peer sends what Qiao sends: the destination and the body that
// `qiao map` prints for the route crm-order-to-erp, against `node server.js --print`.
//
//   node bench/peers/node/compare.js QIAO_BIN FILE ORDER_ID     (from the repository root)
//
// Exit 0 when the system, the path and the parsed bodies are equal (JSON values: object
// members in any order, 4520.0 equal to 4520); 1 otherwise. Also says whether the member
// order and the bytes are the same: Qiao's wire body is `qiao map`'s pretty body without
// the whitespace outside strings (serde_json writes compact and pretty JSON alike otherwise).
// Needs no module: server.js --print is run with this process's NODE_PATH.

const { execFileSync, spawnSync } = require('node:child_process')
const path = require('node:path')
const { isDeepStrictEqual } = require('node:util')

const [qiaoBin, file, orderId] = process.argv.slice(2)
if (!qiaoBin || !file || !orderId) {
  process.stderr.write('usage: node compare.js QIAO_BIN FILE ORDER_ID\n')
  process.exit(2)
}

function run(cmd, args) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (err) {
    process.stderr.write(`compare: ${cmd} ${args.join(' ')} failed:\n${err.stderr ?? ''}${err.stdout ?? ''}\n`)
    process.exit(1)
  }
}

// Whitespace outside strings removed, everything else kept byte for byte.
function minify(json) {
  let out = ''
  let inString = false
  for (let i = 0; i < json.length; i++) {
    const c = json[i]
    if (inString) {
      out += c
      if (c === '\\') out += json[++i]
      else if (c === '"') inString = false
    } else if (c === '"') {
      inString = true
      out += c
    } else if (c !== ' ' && c !== '\n' && c !== '\r' && c !== '\t') {
      out += c
    }
  }
  return out
}

// Qiao: `qiao map` prints the deliveries as a JSON array, `body` the last member of each.
const qiaoText = run(qiaoBin, ['map', '--config', 'routes', '--route', 'crm-order-to-erp', '--param', `order_id=${orderId}`, file])
const qiao = JSON.parse(qiaoText)
if (!Array.isArray(qiao) || qiao.length !== 1) {
  process.stderr.write(`compare: qiao map gave ${Array.isArray(qiao) ? qiao.length : 'no'} deliveries, expected 1:\n${qiaoText}\n`)
  process.exit(1)
}
const compact = minify(qiaoText)
const at = compact.indexOf('"body":')
const qiaoBody = at < 0 ? '' : compact.slice(at + '"body":'.length, -'}]'.length)
if (!isDeepStrictEqual(JSON.parse(qiaoBody || 'null'), qiao[0].body)) {
  process.stderr.write('compare: could not cut the body out of qiao map\'s output\n')
  process.exit(1)
}

// Node: the body as it would be sent, and the destination on stderr.
const printed = spawnSync(process.execPath, [path.join(__dirname, 'server.js'), '--print', file, orderId], { encoding: 'utf8' })
if (printed.status !== 0) {
  process.stderr.write(`compare: node server.js --print failed:\n${printed.stderr}${printed.error ?? ''}\n`)
  process.exit(1)
}
const nodeBody = printed.stdout.replace(/\n$/, '')
const nodeStderr = printed.stderr
const [, nodeSystem, nodePath] = /destination: (\S+) POST (\S+)/.exec(nodeStderr) ?? []

const parsedEqual = isDeepStrictEqual(JSON.parse(nodeBody), JSON.parse(qiaoBody))
const sameOrder = JSON.stringify(JSON.parse(nodeBody)) === JSON.stringify(JSON.parse(qiaoBody))
const destinationEqual = nodeSystem === qiao[0].system && nodePath === qiao[0].path
const bytesEqual = nodeBody === qiaoBody

console.log(`destination: qiao ${qiao[0].system} ${qiao[0].path}; node ${nodeSystem} ${nodePath}: ${destinationEqual ? 'equal' : 'DIFFERENT'}`)
console.log(`body, parsed JSON: ${parsedEqual ? 'equal' : 'DIFFERENT'}${parsedEqual ? `, members in ${sameOrder ? 'the same' : 'a different'} order` : ''}`)
if (bytesEqual) {
  console.log(`body, bytes: equal (${Buffer.byteLength(nodeBody)} bytes)`)
} else {
  let i = 0
  while (i < nodeBody.length && nodeBody[i] === qiaoBody[i]) i++
  const around = (s) => JSON.stringify(s.slice(Math.max(0, i - 20), i + 20))
  console.log(
    `body, bytes: different (qiao ${Buffer.byteLength(qiaoBody)}, node ${Buffer.byteLength(nodeBody)} bytes); ` +
      `first difference at character ${i}: qiao ${around(qiaoBody)}, node ${around(nodeBody)}`,
  )
}
if (!parsedEqual || !destinationEqual) {
  console.log(`qiao: ${qiaoBody}\nnode: ${nodeBody}`)
  process.exit(1)
}
