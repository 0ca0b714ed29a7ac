'use strict'
// The CRM → ERP route of routes/crm-order-to-erp.yaml, written by hand as a Node.js service:
// the peer that bench/load.sh measures beside Qiao and nginx (target `node`).
//
// Per request, the same work as Qiao's route:
//   1. parse the JSON body (fastify's parser; 415 for a body that is not JSON, 413 above
//      2 MiB, 400 for malformed JSON),
//   2. validate it against routes/schemas/crm-order.json with Ajv (draft 2020-12, formats
//      checked as with Qiao's `validate_formats: true`; every violation listed in the 422),
//   3. choose the destination by the route's `when:` conditions (order total ≤ ¥100,000: the
//      ERP; above: the DingTalk approval at the OA),
//   4. map the order to the receiver's body exactly as the route's `map:` does (lookups,
//      template, date and number coercions, one entry per order item),
//   5. check the ERP body against routes/schemas/kingdee-sal-saleorder.json (the
//      destination's receiver schema; 500 when it does not match: a bug in the map),
//   6. POST it with undici (a keep-alive Pool per system) with the system's static headers
//      (routes/systems.yaml), a message id and a traceparent, retrying like the system's
//      `retry:` (3 attempts, 200 ms doubling to 2 s, on 5xx/408/429 and broken connections),
//   7. read the answer, classify it (Kingdee's IsSuccess: false inside a 200, DingTalk's
//      errcode) and relay it to the CRM: status, content-type and body as the ERP sent them.
//
//   node server.js [--listen HOST:PORT]        # or PORT / LISTEN; default 127.0.0.1:8090
//   node server.js --print FILE ORDER_ID      # offline: print the body that would be sent
//                                             # (the destination on stderr), send nothing
// Environment: ERP_URL (http://127.0.0.1:9101), OA_URL (http://127.0.0.1:9103), ERP_ACCT_ID
// (5f8e2c1a9b7d3e40), like routes/systems.yaml. Modules: `npm ci` here, or NODE_PATH pointing
// at a node_modules installed elsewhere (bench/load.sh keeps one under ~/.cache).

const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')
const Ajv2020 = require('ajv/dist/2020')
const addFormats = require('ajv-formats')

const ROUTE = 'crm-order-to-erp'
const ROUTE_PATH = '/crm/orders/:order_id'
const MAX_BODY_BYTES = 2097152
const SCHEMA_DIR = path.resolve(__dirname, '../../../routes/schemas')
const ERP_SAVE_PATH = '/k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc'
const OA_PATH = '/topapi/processinstance/create'

// --- schemas --------------------------------------------------------------------------------

const ajv = new Ajv2020({ allErrors: true, allowUnionTypes: true })
addFormats(ajv)

// Loads a schema of routes/schemas and, first, the sibling files its $refs name
// ("common.json#/$defs/..."), each registered under its file name.
function loadSchema(file) {
  const schema = JSON.parse(fs.readFileSync(path.join(SCHEMA_DIR, file), 'utf8'))
  const refs = new Set()
  ;(function walk(node) {
    if (Array.isArray(node)) return node.forEach(walk)
    if (node === null || typeof node !== 'object') return
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string' && !v.startsWith('#')) refs.add(v.split('#')[0])
      else walk(v)
    }
  })(schema)
  for (const ref of refs) {
    if (!ajv.getSchema(ref)) ajv.addSchema(loadSchema(ref), ref)
  }
  return schema
}

const validateOrder = ajv.compile(loadSchema('crm-order.json'))
const validateSaleOrder = ajv.compile(loadSchema('kingdee-sal-saleorder.json'))

function escapePointer(key) {
  return String(key).replace(/~/g, '~0').replace(/\//g, '~1')
}

// Ajv's errors as Qiao lists them: a JSON Pointer to the field at fault (the missing property
// itself for `required`), the keyword, a message.
function violations(errors) {
  return errors.map((e) => {
    if (e.keyword === 'required') {
      const p = e.params.missingProperty
      return { pointer: `${e.instancePath}/${escapePointer(p)}`, keyword: 'required', message: `"${p}" is a required property` }
    }
    return { pointer: e.instancePath, keyword: e.keyword, message: e.message }
  })
}

// --- mapping helpers (docs/mapping.md) ------------------------------------------------------

class MappingError extends Error {
  constructor(target, source, reason) {
    super(reason)
    this.target = target
    this.source = source
  }
}

// A key of an object; undefined (absent) for anything else, as a path step finds nothing.
function field(value, key) {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && Object.hasOwn(value, key)
    ? value[key]
    : undefined
}

function first(value) {
  return Array.isArray(value) && value.length > 0 ? value[0] : undefined
}

function describe(v) {
  return JSON.stringify(v)
}

// lookup: absent stays absent, null stays null; keys compared as text.
function lookup(table, value, target, source) {
  if (value === undefined || value === null) return value
  if (typeof value === 'object') throw new MappingError(target, source, `lookup \`${table.name}\` cannot use an object as a key`)
  const hit = table.values.get(String(value))
  if (hit !== undefined) return hit
  if (table.hasDefault) return table.default
  throw new MappingError(target, source, `lookup \`${table.name}\` has no entry for ${describe(value)} and no default`)
}

const SALERS = {
  name: 'salers',
  values: new Map([['wangq', 'YG0007'], ['lina', 'YG0012'], ['zhangwei', 'YG0003']]),
  hasDefault: true,
  default: 'YG0001',
}
const DINGTALK_USERS = {
  name: 'dingtalk_users',
  values: new Map([['wangq', '0162381720862551'], ['lina', '0162381720862552'], ['zhangwei', '0162381720862553']]),
  hasDefault: true,
  default: 'manager4220',
}

const NUMBER_TEXT = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/

// as: number. Numbers unchanged, strings holding a number (spaces around ignored).
function asNumber(value, target, source) {
  if (value === undefined || value === null || typeof value === 'number') return value
  if (typeof value === 'string') {
    const t = value.trim()
    if (NUMBER_TEXT.test(t)) {
      const n = Number(t)
      if (Number.isFinite(n)) return n
    }
  }
  throw new MappingError(target, source, `cannot coerce ${describe(value)} to a number`)
}

function pad(n, width) {
  return String(n).padStart(width, '0')
}

function daysInMonth(y, m) {
  return m === 2 ? (y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0) ? 29 : 28) : [4, 6, 9, 11].includes(m) ? 30 : 31
}

function validDate(y, m, d) {
  return m >= 1 && m <= 12 && d >= 1 && d <= daysInMonth(y, m)
}

function validTime(h, mi, s) {
  return h <= 23 && mi <= 59 && s <= 60
}

function fromEpochMs(ms) {
  const d = new Date(ms)
  if (Number.isNaN(d.getTime())) return null
  return `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1, 2)}-${pad(d.getUTCDate(), 2)}`
}

const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})$/
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/
const NAIVE_DATETIME = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?$/
const SLASH_DATETIME = /^(\d{4})\/(\d{2})\/(\d{2}) (\d{2}):(\d{2}):(\d{2})$/
const SLASH_DATE = /^(\d{4})\/(\d{2})\/(\d{2})$/
const COMPACT_DATE = /^(\d{4})(\d{2})(\d{2})$/
const SAP_DATE = /^\/Date\((-?\d+)([+-]\d{4})?\)\/$/

// as: date, without parse/format/timezone: the auto-detected input forms, written %Y-%m-%d
// (a naive input is read in UTC, an RFC 3339 one keeps its own offset, epochs are UTC).
function asDate(value, target, source) {
  if (value === undefined || value === null) return value
  let out = null
  if (typeof value === 'number') {
    if (Number.isInteger(value)) out = fromEpochMs(value)
  } else if (typeof value === 'string') {
    let m
    if ((m = ISO_DATE.exec(value)) !== null) {
      if (validDate(+m[1], +m[2], +m[3])) out = value
    } else if ((m = RFC3339.exec(value)) !== null || (m = SLASH_DATETIME.exec(value)) !== null) {
      if (validDate(+m[1], +m[2], +m[3]) && validTime(+m[4], +m[5], +m[6])) out = `${m[1]}-${m[2]}-${m[3]}`
    } else if ((m = NAIVE_DATETIME.exec(value)) !== null) {
      if (validDate(+m[1], +m[2], +m[3]) && validTime(+m[4], +m[5], +(m[6] ?? 0)) && (m[6] !== undefined || m[7] === undefined)) {
        out = `${m[1]}-${m[2]}-${m[3]}`
      }
    } else if ((m = SAP_DATE.exec(value)) !== null) {
      out = fromEpochMs(Number(m[1]))
    } else if (/^\d{13}$/.test(value)) {
      out = fromEpochMs(Number(value))
    } else if (/^\d{10}$/.test(value)) {
      out = fromEpochMs(Number(value) * 1000)
    } else if ((m = SLASH_DATE.exec(value) ?? COMPACT_DATE.exec(value)) !== null) {
      if (validDate(+m[1], +m[2], +m[3])) out = `${m[1]}-${m[2]}-${m[3]}`
    }
  }
  if (out === null) throw new MappingError(target, source, `cannot read ${describe(value)} as a date`)
  return out
}

// A template placeholder's value as text: strings as they are, anything else as JSON.
function text(value) {
  return typeof value === 'string' ? value : JSON.stringify(value)
}

// --- the route ------------------------------------------------------------------------------

// The `when:` conditions read the order total,
//   [.records[0].OrderItems.records[] | .Quantity * .UnitPrice] | add
// null for no items (jq's add of []); the schema makes every Quantity and UnitPrice a number.
function orderTotal(order) {
  const items = field(field(first(field(order, 'records')), 'OrderItems'), 'records')
  if (!Array.isArray(items)) throw new MappingError(null, 'jq', 'jq: cannot iterate over ' + describe(items ?? null))
  let total = null
  for (const item of items) {
    const q = field(item, 'Quantity')
    const p = field(item, 'UnitPrice')
    if (typeof q !== 'number' || typeof p !== 'number') {
      throw new MappingError(null, 'jq', `jq: cannot calculate ${describe(q ?? null)} * ${describe(p ?? null)}`)
    }
    total = total === null ? q * p : total + q * p
  }
  return total
}

// jq orders null before every number: `null <= 100000` holds, `null > 100000` does not.
const DESTINATIONS = [
  { system: 'erp', path: ERP_SAVE_PATH, when: (total) => total === null || total <= 100000 },
  { system: 'oa', path: OA_PATH, when: (total) => total !== null && total > 100000 },
]

// The route's map: the Kingdee sales order (SAL_SaleOrder) for the WebAPI Save call.
function mapSaleOrder(order, params) {
  const rec = first(field(order, 'records'))
  if (rec === undefined || rec === null) {
    throw new MappingError('data.Model', 'records[0]', 'required, but the message has no value there')
  }
  const model = { FID: 0, FBillTypeID: { FNumber: 'XSDD01_SYS' } }
  const date = asDate(field(rec, 'EffectiveDate'), 'data.Model.FDate', 'EffectiveDate')
  if (date !== undefined) model.FDate = date
  model.FSaleOrgId = { FNumber: '100' }
  const customer = field(field(rec, 'Account'), 'AccountNumber')
  if (customer === undefined || customer === null) {
    throw new MappingError('data.Model.FCustId.FNumber', 'Account.AccountNumber', 'required, but the message has no value there')
  }
  model.FCustId = { FNumber: customer }
  const saler = lookup(SALERS, field(field(rec, 'Owner'), 'Alias'), 'data.Model.FSalerId.FNumber', 'Owner.Alias')
  model.FSalerId = saler === undefined ? {} : { FNumber: saler }
  const orderNumber = field(rec, 'OrderNumber')
  if (orderNumber === undefined || orderNumber === null) {
    throw new MappingError('data.Model.FNote', 'OrderNumber', 'the template needs it but the message has no value there (write `{path?}` to allow that)')
  }
  const po = field(rec, 'PoNumber')
  model.FNote = `CRM订单 ${text(orderNumber)} / 客户PO ${po === undefined || po === null ? '' : text(po)} / ${params.order_id}`
  model.FSaleOrderFinance = { FSettleCurrId: { FNumber: 'PRE001' }, FIsIncludedTax: true }
  const items = field(field(rec, 'OrderItems'), 'records')
  if (items !== undefined && items !== null) {
    if (!Array.isArray(items)) {
      throw new MappingError('data.Model.FSaleOrderEntry', 'OrderItems.records', `\`each\` needs an array but found ${describe(items)}`)
    }
    const entries = new Array(items.length)
    for (let i = 0; i < items.length; i++) {
      try {
        entries[i] = mapEntry(items[i])
      } catch (err) {
        if (err instanceof MappingError) err.target = `data.Model.FSaleOrderEntry[${i}].${err.target}`
        throw err
      }
    }
    model.FSaleOrderEntry = entries
  }
  return { formid: 'SAL_SaleOrder', data: { IsAutoSubmitAndAudit: true, NeedReturnFields: ['FBillNo'], Model: model } }
}

function mapEntry(item) {
  const product = field(item, 'Product2')
  const code = field(product, 'ProductCode')
  const entry = { FMaterialId: code === undefined ? {} : { FNumber: code }, FUnitID: { FNumber: 'Pcs' } }
  const qty = asNumber(field(item, 'Quantity'), 'FQty', 'Quantity')
  if (qty !== undefined) entry.FQty = qty
  const price = asNumber(field(item, 'UnitPrice'), 'FTaxPrice', 'UnitPrice')
  if (price !== undefined) entry.FTaxPrice = price
  entry.FEntryTaxRate = 13
  const delivery = asDate(field(item, 'ServiceDate'), 'FDeliveryDate', 'ServiceDate')
  if (delivery !== undefined && delivery !== null) entry.FDeliveryDate = delivery // omit_null
  const note = field(product, 'Name')
  if (note !== undefined) entry.FEntryNote = note
  return entry
}

// The OA destination's own map: a DingTalk approval 销售大单审批.
function mapApproval(order, rawBody) {
  const rec = first(field(order, 'records'))
  const approval = { process_code: 'PROC-SALES-BIG-ORDER' }
  const originator = lookup(DINGTALK_USERS, field(field(rec, 'Owner'), 'Alias'), 'originator_user_id', 'records[0].Owner.Alias')
  if (originator !== undefined) approval.originator_user_id = originator
  approval.dept_id = -1
  const account = field(rec, 'Account')
  const po = field(rec, 'PoNumber')
  approval.form_component_values = [
    withValue({ name: '客户' }, field(account, 'Name')),
    withValue({ name: '客户编码' }, field(account, 'AccountNumber')),
    withValue({ name: 'CRM订单号' }, field(rec, 'OrderNumber')),
    { name: '含税金额', value: jqTotalText(order, rawBody) },
    { name: '客户PO', value: po === undefined || po === null ? '' : po },
  ]
  return approval
}

function withValue(obj, value) {
  if (value !== undefined) obj.value = value
  return obj
}

// `[... | .Quantity * .UnitPrice] | add | tostring`. jq keeps integers and floats apart
// (20 * 4520.0 is 90400.0, written "90400.0"); JSON.parse does not, so whether a factor was
// written as a float is read from the request's text (this runs for big orders only).
function jqTotalText(order, rawBody) {
  const total = orderTotal(order)
  if (total === null) return 'null'
  let float = !Number.isInteger(total)
  if (!float && rawBody !== undefined) {
    const items = field(field(first(field(parseKeepingNumbers(rawBody), 'records')), 'OrderItems'), 'records')
    float = items.some((it) => field(it, 'Quantity').float || field(it, 'UnitPrice').float)
  }
  return float && Number.isInteger(total) && Math.abs(total) < 1e16 ? total.toFixed(1) : String(total)
}

// JSON.parse, except that each number becomes { value, float } (float: written with a
// fraction or an exponent).
function parseKeepingNumbers(src) {
  return JSON.parse(src.replace(/"(?:[^"\\]|\\.)*"|-?\d+(\.\d+)?([eE][+-]?\d+)?/g, (tok, frac, exp) =>
    tok[0] === '"' ? tok : `{"value":${tok},"float":${frac !== undefined || exp !== undefined}}`,
  ))
}

// The route's work up to the delivery: validate, select, map, check the receiver schema.
// Returns { problem } or { system, path, payload } (payload: the body as sent).
function processOrder(order, params, rawBody) {
  if (!validateOrder(order)) {
    const errors = violations(validateOrder.errors)
    const n = errors.length
    return {
      problem: {
        status: 422,
        kind: 'schema-violation',
        title: "The body does not match the route's schema",
        detail: `${n} violation${n === 1 ? '' : 's'}, the first: ${errors[0].pointer} ${errors[0].message}`,
        extra: { errors },
      },
    }
  }
  try {
    const total = orderTotal(order)
    const chosen = DESTINATIONS.filter((d) => d.when(total))
    if (chosen.length === 0) {
      return {
        problem: {
          status: 422,
          kind: 'no-matching-destination',
          title: 'No destination takes this message',
          detail: `no destination of route ${ROUTE} takes this message: every \`when\` condition is false`,
        },
      }
    }
    // The two conditions are exclusive: exactly one destination.
    const dest = chosen[0]
    if (dest.system === 'erp') {
      const body = mapSaleOrder(order, params)
      if (!validateSaleOrder(body)) {
        const errors = violations(validateSaleOrder.errors)
        return {
          problem: {
            status: 500,
            kind: 'output-schema-violation',
            title: "The mapped message does not match the receiver's schema",
            detail: `the message mapped for erp breaks schemas/kingdee-sal-saleorder.json: ${errors[0].pointer} ${errors[0].message}`,
            extra: { system: 'erp', errors },
          },
        }
      }
      return { system: 'erp', path: dest.path, payload: JSON.stringify(body) }
    }
    return { system: 'oa', path: dest.path, payload: JSON.stringify(mapApproval(order, rawBody)) }
  } catch (err) {
    if (!(err instanceof MappingError)) throw err
    const detail = err.target
      ? `route ${ROUTE}: target \`${err.target}\` (from \`${err.source}\`): ${err.message}`
      : `the \`when\` of destination erp failed: ${err.message}`
    return {
      problem: {
        status: 422,
        kind: 'mapping-failed',
        title: 'The message could not be mapped',
        detail,
        extra: err.target ? { target: err.target, source: err.source } : { system: 'erp' },
      },
    }
  }
}

// --- offline: --print -----------------------------------------------------------------------

function printMode(file, orderId) {
  const raw = fs.readFileSync(file, 'utf8')
  const result = processOrder(JSON.parse(raw), { order_id: orderId }, raw)
  if (result.problem) {
    process.stderr.write(`${result.problem.kind}: ${result.problem.detail}\n`)
    process.exit(1)
  }
  process.stderr.write(`destination: ${result.system} POST ${result.path}\n`)
  process.stdout.write(result.payload + '\n')
}

// --- the service ----------------------------------------------------------------------------

function problemBody(problem, instance, messageId) {
  return JSON.stringify({
    type: `urn:qiao:problem:${problem.kind}`,
    title: problem.title,
    status: problem.status,
    detail: problem.detail,
    instance,
    ...(messageId ? { route: ROUTE, message_id: messageId } : {}),
    error_kind: problem.kind,
    ...problem.extra,
  })
}

function sendProblem(reply, request, problem, messageId) {
  if (messageId) reply.header('x-qiao-message-id', messageId)
  return reply
    .code(problem.status)
    .header('content-type', 'application/problem+json')
    .send(problemBody(problem, request.url.split('?')[0], messageId))
}

// The sender's Idempotency-Key when usable (1 to 200 visible ASCII characters after trimming),
// else a UUIDv7.
const USABLE_KEY = /^[\x21-\x7e]{1,200}$/
function messageIdOf(headers) {
  const key = headers['idempotency-key']
  if (typeof key === 'string') {
    const k = key.trim()
    if (USABLE_KEY.test(k)) return k
  }
  const r = crypto.randomUUID()
  const ms = Date.now().toString(16).padStart(12, '0')
  return `${ms.slice(0, 8)}-${ms.slice(8, 12)}-7${r.slice(15)}`
}

// W3C trace context: the caller's trace continues with a new span id; otherwise a new trace
// (not sampled). The ids come from Math.random, as OpenTelemetry's JS SDK makes them
// (RandomIdGenerator): crypto.randomBytes per request was ~6% of this process's CPU under load.
const TRACEPARENT = /^00-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})$/
function randomHex(chars) {
  let hex = ''
  for (let i = 0; i < chars; i += 8) hex += ((Math.random() * 0x100000000) >>> 0).toString(16).padStart(8, '0')
  return hex
}
function traceparentFor(headers) {
  const m = typeof headers.traceparent === 'string' ? TRACEPARENT.exec(headers.traceparent) : null
  return m ? `00-${m[1]}-${randomHex(16)}-${m[2]}` : `00-${randomHex(32)}-${randomHex(16)}-00`
}

function serve() {
  const fastify = require('fastify')
  const { Pool } = require('undici')

  const arg = process.argv.indexOf('--listen')
  const listen = arg > 0 ? process.argv[arg + 1] : process.env.LISTEN ?? `127.0.0.1:${process.env.PORT ?? 8090}`
  const colon = listen.lastIndexOf(':')
  const host = listen.slice(0, colon)
  const port = Number(listen.slice(colon + 1))

  // routes/systems.yaml: base URL, timeouts, static headers, retry.
  function system(name, envVar, fallback, headers, success) {
    const url = new URL(process.env[envVar] ?? fallback)
    return {
      name,
      prefix: url.pathname.replace(/\/$/, ''),
      headers,
      success,
      pool: new Pool(url.origin, {
        connect: { timeout: 2000 },
        headersTimeout: 15000,
        bodyTimeout: 15000,
        keepAliveTimeout: 30000,
        pipelining: 1,
      }),
    }
  }
  const systems = {
    erp: system('erp', 'ERP_URL', 'http://127.0.0.1:9101', { 'x-kdapi-acctid': process.env.ERP_ACCT_ID ?? '5f8e2c1a9b7d3e40', 'x-kdapi-lcid': '2052' }, kingdeeFailure),
    oa: system('oa', 'OA_URL', 'http://127.0.0.1:9103', {}, dingtalkFailure),
  }
  const RETRY = { attempts: 3, initialMs: 200, maxMs: 2000 }

  const app = fastify({ logger: false, bodyLimit: MAX_BODY_BYTES, return503OnClosing: true })
  app.decorateRequest('rawBody', undefined)
  const jsonParser = app.getDefaultJsonParser('error', 'error')
  // JSON only: application/json, text/json, application/*+json (any parameters); anything
  // else (fastify's text/plain parser included) is a 415.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser(['application/json', 'text/json', /^application\/[\w.!#$&^-]+\+json(\s*;|$)/], { parseAs: 'string' }, (request, body, done) => {
    request.rawBody = body
    jsonParser(request, body, done)
  })

  app.setErrorHandler((err, request, reply) => {
    const code = err.code ?? ''
    if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return sendProblem(reply, request, { status: 415, kind: 'unsupported-media-type', title: 'The body is not JSON', detail: `a message route reads JSON, not ${request.headers['content-type'] ?? 'a body without a Content-Type'}` })
    }
    if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return sendProblem(reply, request, { status: 413, kind: 'payload-too-large', title: 'The body is too large', detail: `the body is larger than ${MAX_BODY_BYTES} bytes`, extra: { max_body_bytes: MAX_BODY_BYTES } })
    }
    if (err.statusCode === 400) {
      return sendProblem(reply, request, { status: 400, kind: 'malformed-json', title: 'The body is not well-formed JSON', detail: err.message })
    }
    console.error(`node-peer: ${request.method} ${request.url}: ${err.stack ?? err}`)
    return sendProblem(reply, request, { status: 500, kind: 'internal', title: 'Internal error', detail: 'internal error' })
  })

  app.post(ROUTE_PATH, async (request, reply) => {
    if (request.headers['content-type'] === undefined) {
      return sendProblem(reply, request, { status: 415, kind: 'unsupported-media-type', title: 'The body is not JSON', detail: 'a message route reads JSON; the request has no Content-Type' })
    }
    if (request.body === undefined) {
      return sendProblem(reply, request, { status: 400, kind: 'malformed-json', title: 'The body is not well-formed JSON', detail: 'the body is empty' })
    }
    const messageId = messageIdOf(request.headers)
    const result = processOrder(request.body, request.params, request.rawBody)
    if (result.problem) return sendProblem(reply, request, result.problem, messageId)

    const sys = systems[result.system]
    const headers = {
      'content-type': 'application/json',
      ...sys.headers,
      'x-qiao-message-id': messageId,
      traceparent: traceparentFor(request.headers),
    }
    let answer
    try {
      answer = await deliver(sys, sys.prefix + result.path, headers, result.payload)
    } catch (err) {
      const kind = failureKind(err)
      return sendProblem(reply, request, {
        status: kind === 'receiver-timeout' ? 504 : 502,
        kind,
        title: 'The receiving system could not be reached',
        detail: `delivery to ${sys.name} failed after ${RETRY.attempts} attempts: ${err.message}`,
        extra: { system: sys.name, attempts: RETRY.attempts },
      }, messageId)
    }
    if (answer.status >= 200 && answer.status < 300) {
      const failure = sys.success(answer.text)
      if (failure) console.error(`node-peer: ${messageId}: receiver-business-error from ${sys.name}: ${failure}`)
    } else {
      console.error(`node-peer: ${messageId}: ${sys.name} answered ${answer.status}`)
    }
    reply.code(answer.status).header('x-qiao-message-id', messageId)
    if (answer.contentType !== undefined) reply.header('content-type', answer.contentType)
    return answer.text
  })

  // POST with the system's retries: 5xx, 408, 429 and broken connections are tried again;
  // the last answer is relayed whatever it is.
  async function deliver(sys, urlPath, headers, payload) {
    for (let attempt = 1; ; attempt++) {
      let res
      try {
        res = await sys.pool.request({ method: 'POST', path: urlPath, headers, body: payload })
      } catch (err) {
        if (attempt >= RETRY.attempts) throw err
        await backoff(attempt)
        continue
      }
      const retryable = res.statusCode >= 500 || res.statusCode === 408 || res.statusCode === 429
      if (retryable && attempt < RETRY.attempts) {
        await res.body.dump()
        await backoff(attempt)
        continue
      }
      return { status: res.statusCode, contentType: res.headers['content-type'], text: await res.body.text() }
    }
  }

  function backoff(attempt) {
    const ms = Math.min(RETRY.initialMs * 2 ** (attempt - 1), RETRY.maxMs)
    return new Promise((resolve) => setTimeout(resolve, ms))
  }

  function failureKind(err) {
    const code = err.code ?? err.cause?.code ?? ''
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return 'receiver-timeout'
    if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH') return 'receiver-unreachable'
    return 'receiver-failed'
  }

  app.listen({ host, port }).then(
    () => console.error(`node-peer: listening on ${host}:${port}; erp ${process.env.ERP_URL ?? 'http://127.0.0.1:9101'}`),
    (err) => {
      console.error(`node-peer: cannot listen on ${listen}: ${err.message}`)
      process.exit(1)
    },
  )
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      app.close().then(() => process.exit(0))
      setTimeout(() => process.exit(0), 2000).unref()
    })
  }
}

// success: kingdee — Result.ResponseStatus.IsSuccess: false inside a 2xx is a failure.
function kingdeeFailure(text) {
  let answer
  try {
    answer = JSON.parse(text)
  } catch {
    return 'the answer is not JSON'
  }
  const status = field(field(answer, 'Result'), 'ResponseStatus')
  if (field(status, 'IsSuccess') !== false) return null
  const errors = field(status, 'Errors')
  return JSON.stringify(Array.isArray(errors) ? errors : status)
}

// success: dingtalk — a non-zero errcode inside a 2xx is a failure.
function dingtalkFailure(text) {
  let answer
  try {
    answer = JSON.parse(text)
  } catch {
    return 'the answer is not JSON'
  }
  const code = field(answer, 'errcode')
  return code === undefined || code === 0 ? null : `errcode ${code}: ${field(answer, 'errmsg')}`
}

const printAt = process.argv.indexOf('--print')
if (printAt > 0) {
  const [file, orderId] = process.argv.slice(printAt + 1)
  if (!file || !orderId) {
    process.stderr.write('usage: node server.js --print FILE ORDER_ID\n')
    process.exit(2)
  }
  printMode(file, orderId)
} else {
  serve()
}
