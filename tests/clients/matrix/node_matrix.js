#!/usr/bin/env node
// node_matrix.js - node mysql2 through switchyard vs. straight to the primary.
//
// usage: NODE_PATH=/tmp/switchyard-matrix-node/node_modules \
//          node node_matrix.js --proxy HOST:PORT --direct HOST:PORT [--only NAME,...] [--dump]
//
// Same idea as py_matrix.py: every check is a small async function of a Side.  It runs once
// against --proxy and once against --direct on fresh connections (strict/strict, sbtest) and
// records normalized observations (values with their JS types, field metadata, OK-packet
// affectedRows / insertId / info / serverStatus / warningStatus, error code / errno /
// sqlState / message).  Both lists must be equal; a statement that fails the same way on
// both sides is the same behaviour.  Most checks run twice: with query() (text protocol,
// client-side placeholders) and with execute() (server-side prepared statements).
//
// Output: `CHECK node <name> PASS|FAIL|SKIP <detail>` per check, then `<N> passed, <M> failed`;
// exit 1 if any check failed.  Only loopback addresses; every loop is bounded and every
// statement has a timeout.
'use strict';

const crypto = require('crypto');
const net = require('net');
const mysql = require('mysql2/promise');

const USER = 'strict';
const PASSWORD = 'strict';
const DB = 'sbtest';
const PREFIX = 'mx_node_';
const TIMEOUT_MS = 60000;
const RYW_ROUNDS = 20;

class SetupFailed extends Error {}

// ---------------------------------------------------------------- normalization
function fingerprint(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex').slice(0, 16);
}

function norm(v) {
  if (v === null || v === undefined || typeof v === 'boolean') return v ?? null;
  if (Array.isArray(v)) return v.map(norm);
  if (Buffer.isBuffer(v)) return `Buffer:${v.length <= 64 ? v.toString('hex') : `[${v.length}]sha256=${fingerprint(v)}`}`;
  if (v instanceof Date) return `Date:${isNaN(v) ? 'Invalid' : v.toISOString()}`;
  if (typeof v === 'object') return `object:${JSON.stringify(v)}`;
  if (typeof v === 'string' && v.length > 200) return `string:[${v.length}]sha256=${fingerprint(v)}`;
  return `${typeof v}:${String(v)}`;
}

function isHeader(r) {
  return r !== null && typeof r === 'object' && !Array.isArray(r) && 'affectedRows' in r;
}

function header(h) {
  const { affectedRows, insertId, info, serverStatus, warningStatus, changedRows } = h;
  return { affectedRows, insertId, info, serverStatus, warningStatus, changedRows };
}

function fieldsOf(fields) {
  return fields.map((f) => [f.name, f.columnType ?? f.type, f.characterSet, f.columnLength,
    f.flags, f.decimals]);
}

function oneResult(rows, fields) {
  if (isHeader(rows)) return header(rows);
  return { fields: fields ? fieldsOf(fields) : null, rows };
}

// query()/execute() answer [rows, fields]; with several results, both are arrays of them
function outcome(rows, fields) {
  const multi = Array.isArray(fields) && fields.length > 0
    && fields.every((f) => f === undefined || Array.isArray(f));
  if (!multi) return oneResult(rows, fields);
  return rows.map((r, i) => oneResult(r, fields[i]));
}

function isDriverError(err) {
  return err && (typeof err.errno === 'number' || 'sqlState' in err || 'fatal' in err);
}

function errorInfo(err) {
  return { error: [err.code, err.errno, err.sqlState ?? null, err.sqlMessage ?? err.message] };
}

function short(value, limit = 240) {
  const text = JSON.stringify(value) ?? 'undefined';
  return text.length <= limit ? text : `${text.slice(0, limit)}...`;
}

// ---------------------------------------------------------------- one side of a check
class Side {
  constructor(label, addr) {
    this.label = label;
    this.addr = addr;
    this.obs = [];
    this.violations = [];
    this.crashed = null;
    this.conns = [];
  }

  async connect(extra = {}) {
    const conn = await mysql.createConnection({
      host: this.addr.host, port: this.addr.port, user: USER, password: PASSWORD, database: DB,
      charset: 'UTF8MB4_GENERAL_CI', connectTimeout: 10000, rowsAsArray: true,
      supportBigNumbers: true, ...extra,
    });
    this.conns.push(conn);
    return conn;
  }

  note(label, value) {
    this.obs.push([label, norm(value)]);
  }

  noteRaw(label, value) { // already normalized
    this.obs.push([label, value]);
  }

  expect(ok, what) {
    if (!ok) this.violations.push(what);
  }

  async setup(conn, ...statements) {
    for (const sql of statements) {
      try {
        await conn.query({ sql, timeout: TIMEOUT_MS });
      } catch (err) {
        if (!isDriverError(err)) throw err;
        this.noteRaw(`setup: ${sql}`, normOutcome(errorInfo(err)));
        throw new SetupFailed(sql);
      }
    }
  }

  async table(conn, suffix, columns) {
    const name = `${PREFIX}${suffix}`;
    await this.setup(conn, `DROP TABLE IF EXISTS ${name}`,
      `CREATE TABLE ${name} (${columns}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`);
    return name;
  }

  // run one statement with query() or execute(), note the outcome, return the rows (null on error)
  async q(conn, sql, { params, mode = 'query', label } = {}) {
    try {
      const [rows, fields] = await conn[mode]({ sql, timeout: TIMEOUT_MS }, params);
      this.noteRaw(label ?? sql, normOutcome(outcome(rows, fields)));
      return rows;
    } catch (err) {
      if (!isDriverError(err)) throw err;
      this.noteRaw(label ?? sql, normOutcome(errorInfo(err)));
      return null;
    }
  }

  async run(check) {
    try {
      await check(this);
    } catch (err) {
      if (err instanceof SetupFailed) return;
      if (isDriverError(err)) this.noteRaw('uncaught driver error', normOutcome(errorInfo(err)));
      else this.crashed = `${err.name}: ${err.message}`;
    } finally {
      await this.close();
    }
  }

  async close() {
    for (const conn of this.conns.reverse()) {
      try { await conn.end(); } catch (_) { conn.destroy(); }
    }
    this.conns = [];
  }
}

// values keep their JS type; metadata (numbers, names) stays as it is
function normOutcome(o) {
  if (Array.isArray(o)) return o.map(normOutcome);
  if (o.error) return { error: o.error };
  if ('rows' in o) return { fields: o.fields, rows: norm(o.rows) };
  return o;
}

// ---------------------------------------------------------------- checks
const TYPE_COLUMNS = `id INT PRIMARY KEY,
  ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED,
  mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
  de DECIMAL(30,10), fl FLOAT, db DOUBLE, bt BIT(12),
  da DATE, dt DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL, tm TIME(6), yr YEAR,
  ch CHAR(8), vc VARCHAR(64), bn BINARY(4), vb VARBINARY(32), bl BLOB, tx TEXT,
  en ENUM('small','medium','large'), st SET('a','b','c'), js JSON`;
const TYPE_LITERAL_ROW = `(1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648,
  4294967295, -9223372036854775808, 18446744073709551615, '-12345678901234567890.0123456789',
  1.5, -2.25e-300, b'101010101010', '2024-02-29', '2024-02-29 23:59:58.123456',
  '2021-06-15 12:00:00.250', '-12:34:56.789012', 2155, 'abc', 'Grüße, 世界 🦀',
  X'00FF7F80', X'000102FF', X'DEADBEEF00', 'κείμενο 📄', 'medium', 'c,a',
  '{"k": [1, 2.5, "ü", null], "o": {"e": "🦀"}}')`;
const TYPE_PARAMS = [
  2, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, '9223372036854775807', '0',
  '0.0000000001', -0.25, 1e300, 5, '1999-12-31', '2000-01-01 00:00:00.000001',
  '2030-05-06 07:08:09', '838:59:59', 1901, 'x', 'ASCII only', Buffer.from([0, 39, 92, 34]),
  Buffer.from([0, 10, 13, 26]), Buffer.from([...Array(256).keys()]),
  'it\'s a "quoted" \\ text', 'large', 'a,b', '{"n": 1}',
];

function typesCheck(mode) {
  return async function types(side) {
    const conn = await side.connect();
    const t = await side.table(conn, `types_${mode}`, TYPE_COLUMNS);
    await side.q(conn, `INSERT INTO ${t} VALUES ${TYPE_LITERAL_ROW}`, { mode, label: 'insert literal row' });
    const marks = TYPE_PARAMS.map(() => '?').join(', ');
    await side.q(conn, `INSERT INTO ${t} VALUES (${marks})`, { mode, params: TYPE_PARAMS, label: 'insert param row' });
    await side.q(conn, `INSERT INTO ${t} (id) VALUES (3)`, { mode, label: 'insert null row' });
    await side.q(conn, `SELECT * FROM ${t} ORDER BY id`, { mode, label: 'select all' });
    const rows = await side.q(conn, `SELECT js FROM ${t} WHERE id = ?`, { mode, params: [1], label: 'json' });
    side.note('json value type', rows && rows.length ? typeof rows[0][0] : 'no row');
  };
}

function okPacketCheck(mode) {
  return async function okPacket(side) {
    const conn = await side.connect();
    const t = await side.table(conn, `ok_${mode}`, 'id INT AUTO_INCREMENT PRIMARY KEY, v INT');
    await side.q(conn, `INSERT INTO ${t} (v) VALUES (?), (?)`, { mode, params: [1, 2], label: 'multi-row insert' });
    await side.q(conn, `INSERT IGNORE INTO ${t} (id, v) VALUES (1, 9), (10, 10)`, { mode, label: 'insert ignore' });
    await side.q(conn, `UPDATE ${t} SET v = v + 1 WHERE id <= ?`, { mode, params: [2], label: 'update' });
    await side.q(conn, `UPDATE ${t} SET v = v WHERE id = 1`, { mode, label: 'update unchanged' });
    await side.q(conn, `DELETE FROM ${t} WHERE id = 10`, { mode, label: 'delete' });
    await side.q(conn, 'SHOW WARNINGS', { label: 'show warnings' });
  };
}

function errorsCheck(mode) {
  return async function errors(side) {
    const conn = await side.connect();
    const t = await side.table(conn, `err_${mode}`, 'id INT PRIMARY KEY, v INT');
    await side.q(conn, 'SELEC 1', { mode, label: 'syntax error' });
    await side.q(conn, `INSERT INTO ${t} VALUES (1, 1)`, { mode });
    await side.q(conn, `INSERT INTO ${t} VALUES (?, ?)`, { mode, params: [1, 2], label: 'duplicate key' });
    await side.q(conn, `SELECT * FROM ${PREFIX}no_such_table`, { mode, label: 'unknown table' });
    await side.q(conn, `SELECT no_such_column FROM ${t}`, { mode, label: 'unknown column' });
    await side.q(conn, 'SELECT 1 AS still_usable', { mode });
  };
}

async function multiStatements(side) {
  const conn = await side.connect({ multipleStatements: true });
  const t = await side.table(conn, 'multi', 'id INT PRIMARY KEY, v VARCHAR(10)');
  await side.q(conn, `SELECT 1 AS a; SELECT 'x' AS b, 2.5 AS c; INSERT INTO ${t} VALUES (1, 'one'), `
    + `(2, 'two'); SELECT COUNT(*) AS n FROM ${t}`, { label: 'batch' });
  await side.q(conn, 'SELECT 1 AS first; SELEC 2; SELECT 3 AS never', { label: 'batch with error' });
  await side.q(conn, `SELECT v FROM ${t} ORDER BY id`, { label: 'usable after batch' });
}

function storedProcedureCheck(mode) {
  return async function storedProcedure(side) {
    const conn = await side.connect();
    const t = await side.table(conn, `proc_${mode}`, 'id INT PRIMARY KEY, v VARCHAR(10)');
    const p = `${PREFIX}p_${mode}`;
    await side.setup(conn, `DROP PROCEDURE IF EXISTS ${p}`, `CREATE PROCEDURE ${p}(IN n INT)
      BEGIN
        INSERT INTO ${t} VALUES (n, 'called');
        SELECT n AS n, 'one' AS first;
        SELECT id, v, n * 2 AS doubled FROM ${t} ORDER BY id;
      END`);
    await side.q(conn, `CALL ${p}(?)`, { mode, params: [21], label: 'call 21' });
    await side.q(conn, `CALL ${p}(?)`, { mode, params: [21], label: 'call 21 again (duplicate key)' });
    await side.q(conn, `SELECT COUNT(*) FROM ${t}`, { mode, label: 'after calls' });
  };
}

async function txnRollback(side) {
  const conn = await side.connect();
  const t = await side.table(conn, 'txr', 'id INT PRIMARY KEY, v INT');
  await conn.beginTransaction();
  await side.q(conn, `INSERT INTO ${t} VALUES (1, 10)`);
  await side.q(conn, `SELECT COUNT(*) FROM ${t}`, { label: 'inside transaction' });
  await conn.rollback();
  await side.q(conn, `SELECT COUNT(*) FROM ${t}`, { label: 'after rollback' });
}

async function txnCommit(side) {
  const conn = await side.connect();
  const t = await side.table(conn, 'txc', 'id INT PRIMARY KEY, v INT');
  await side.q(conn, 'START TRANSACTION');
  await side.q(conn, `INSERT INTO ${t} VALUES (?, ?)`, { mode: 'execute', params: [1, 10] });
  await side.q(conn, `SELECT * FROM ${t}`, { mode: 'execute', label: 'inside transaction' });
  await side.q(conn, 'COMMIT');
  await side.q(conn, `SELECT * FROM ${t}`, { mode: 'execute', label: 'after commit' });
}

// SQLAlchemy style: autocommit=0, a failed statement, ROLLBACK; its locks must be gone
async function autocommitOff(side) {
  const conn = await side.connect();
  const t = await side.table(conn, 'ac0', 'id INT PRIMARY KEY, v INT');
  await side.q(conn, 'SET autocommit = 0');
  await side.q(conn, `SELECT COUNT(*) FROM ${t}`, { label: 'first read' });
  await side.q(conn, `INSERT INTO ${t} VALUES (1, 1)`);
  await side.q(conn, 'COMMIT');
  await side.q(conn, `INSERT INTO ${t} VALUES (?, ?)`, { mode: 'execute', params: [1, 2], label: 'duplicate key' });
  await side.q(conn, 'ROLLBACK');
  const other = await side.connect();
  await side.q(other, 'SET SESSION innodb_lock_wait_timeout = 2');
  await side.q(other, `UPDATE ${t} SET v = v + 1 WHERE id = 1`, { label: 'update from another session' });
  await side.q(other, `SELECT v FROM ${t} WHERE id = 1`, { label: 'other session reads its write' });
  await side.q(conn, 'SELECT @@autocommit', { label: 'autocommit still off' });
  await side.q(conn, 'ROLLBACK');
}

async function sessionState(side) {
  const conn = await side.connect();
  await side.q(conn, 'SET @a = 5, time_zone = \'+05:30\'');
  await side.q(conn, 'SELECT @a, @@session.time_zone, FROM_UNIXTIME(0) AS epoch');
  await side.q(conn, 'SELECT @a + ? AS plus', { mode: 'execute', params: [1] });
  await side.q(conn, 'SET SESSION sql_mode = \'PIPES_AS_CONCAT\'');
  await side.q(conn, 'SELECT \'a\' || \'b\' AS joined', { mode: 'execute' });
  await conn.changeUser({ user: USER, password: PASSWORD, database: DB });
  side.note('changeUser', 'ok');
  await side.q(conn, 'SELECT @a, @@session.sql_mode = @@global.sql_mode AS mode_reset', { label: 'after changeUser' });
  await conn.ping();
  side.note('ping', 'ok');
}

function readYourWritesCheck(mode) {
  return async function readYourWrites(side) {
    const conn = await side.connect();
    const t = await side.table(conn, `ryw_${mode}`, 'id INT PRIMARY KEY, v INT');
    for (let i = 1; i <= RYW_ROUNDS; i++) {
      await side.q(conn, `INSERT INTO ${t} VALUES (?, ?)`, { mode, params: [i, i * 10], label: `insert ${i}` });
      await side.q(conn, `SELECT v FROM ${t} WHERE id = ?`, { mode, params: [i], label: `read ${i}` });
    }
    await side.q(conn, `UPDATE ${t} SET v = -v WHERE id <= ?`, { mode, params: [10] });
    await side.q(conn, `SELECT SUM(v) FROM ${t}`, { mode, label: 'read after update' });
  };
}

async function connectCheck(side) {
  const conn = await side.connect();
  // mysql2 internals, on purpose: the greeting decides MariaDB quirks and whether the
  // extended column metadata (JSON columns returned as objects) is negotiated
  const c = conn.connection;
  side.note('handshake', [c._handshakePacket?.serverVersion, c._isMariaDB, c._mariadbExtendedMetadata]);
  const rows = await side.q(conn, 'SELECT 1 AS one, DATABASE() AS db, CURRENT_USER() AS user');
  side.expect(rows !== null, `SELECT 1 failed on ${side.label}: ${short(side.obs.at(-1))}`);
}

const CHECKS = [
  ['connect', connectCheck],
  ['types_query', typesCheck('query')], ['types_execute', typesCheck('execute')],
  ['ok_packet_query', okPacketCheck('query')], ['ok_packet_execute', okPacketCheck('execute')],
  ['errors_query', errorsCheck('query')], ['errors_execute', errorsCheck('execute')],
  ['multi_statements', multiStatements],
  ['stored_procedure_query', storedProcedureCheck('query')],
  ['stored_procedure_execute', storedProcedureCheck('execute')],
  ['txn_rollback', txnRollback], ['txn_commit', txnCommit], ['autocommit_off', autocommitOff],
  ['session_state', sessionState],
  ['read_your_writes_query', readYourWritesCheck('query')],
  ['read_your_writes_execute', readYourWritesCheck('execute')],
];

// ---------------------------------------------------------------- comparison and main
function firstDifference(proxy, direct) {
  const n = Math.max(proxy.length, direct.length);
  for (let i = 0; i < n; i++) {
    const p = proxy[i] ?? null;
    const d = direct[i] ?? null;
    if (JSON.stringify(p) !== JSON.stringify(d)) {
      return `at #${i} ${short((p ?? d)[0], 80)}: proxy=${short(p && p[1])} direct=${short(d && d[1])}`;
    }
  }
  return null;
}

function verdict(proxy, direct) {
  for (const side of [proxy, direct]) {
    if (side.crashed) return ['FAIL', `harness error on ${side.label}: ${side.crashed}`];
  }
  const violations = proxy.violations.concat(direct.violations);
  if (violations.length) return ['FAIL', violations.join('; ')];
  const diff = firstDifference(proxy.obs, direct.obs);
  if (diff) return ['FAIL', diff];
  return ['PASS', `${proxy.obs.length} observations equal`];
}

async function runCheck(check, args) {
  const proxy = new Side('proxy', args.proxy);
  const direct = new Side('direct', args.direct);
  const started = Date.now();
  await proxy.run(check);
  await direct.run(check);
  const [status, detail] = verdict(proxy, direct);
  if (args.dump) direct.obs.forEach(([l, v]) => console.log(`  ${short(l, 100)} => ${short(v, 2000)}`));
  return [status, `${detail} (${((Date.now() - started) / 1000).toFixed(1)}s)`];
}

function loopbackAddr(text) {
  const i = text.lastIndexOf(':');
  const host = text.slice(0, i);
  const port = Number(text.slice(i + 1));
  const loopback = host === 'localhost' || (net.isIPv4(host) && host.startsWith('127.')) || host === '::1';
  if (!loopback || !Number.isInteger(port)) throw new Error(`${text}: only loopback HOST:PORT is allowed`);
  return { host, port };
}

function parseArgs(argv) {
  const args = { only: [], dump: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--proxy') args.proxy = loopbackAddr(argv[++i]);
    else if (a === '--direct') args.direct = loopbackAddr(argv[++i]);
    else if (a === '--only') args.only = argv[++i].split(',').filter(Boolean);
    else if (a === '--dump') args.dump = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!args.proxy || !args.direct) throw new Error('usage: node_matrix.js --proxy HOST:PORT --direct HOST:PORT');
  const unknown = args.only.filter((n) => !CHECKS.some(([name]) => name === n));
  if (unknown.length) throw new Error(`unknown checks: ${unknown.join(', ')}`);
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const checks = CHECKS.filter(([name]) => !args.only.length || name === 'connect' || args.only.includes(name));
  let passed = 0;
  let failed = 0;
  for (const [name, check] of checks) {
    const [status, detail] = await runCheck(check, args);
    console.log(`CHECK node ${name} ${status} ${detail}`);
    if (status === 'PASS') passed++;
    if (status === 'FAIL') failed++;
    if (name === 'connect' && status === 'FAIL') break;
  }
  console.log(`${passed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

main().then((code) => { process.exitCode = code; }, (err) => {
  console.error(`node_matrix.js: ${err.message}`);
  process.exitCode = 2;
});
