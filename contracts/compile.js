#!/usr/bin/env node
// Compile the perund contracts with the pinned solc-js and write deterministic JSON artifacts.
//
//   node contracts/compile.js [--out DIR] [--runs N] [--via-ir | --no-via-ir]
//
// Writes DIR/perund/chain/artifacts/Adjudicator.json (package data) and one JSON per helper
// contract of contracts/test/ into DIR/tests/contracts/artifacts/ (DIR defaults to the repository
// root); TestToken.json goes into both (the embedded dev chain deploys it). Same sources and settings give byte-identical files: keys sorted, no timestamps, paths
// relative to the repository. --runs and --via-ir exist to measure gas with other settings; the
// committed artifacts use the defaults below (see docs/contract.md for the measurements).
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const SOLC_VERSION = '0.8.28';
const EVM_VERSION = 'cancun';
const DEFAULT_RUNS = 1000000;
const DEFAULT_VIA_IR = true;

const ROOT = path.resolve(__dirname, '..');
const PACKAGE = path.join('perund', 'chain', 'artifacts');
// [source directory, output directory relative to the output root, contracts also packaged]
const UNITS = [
  ['contracts', PACKAGE, []],
  // The dev chain deploys the test token PRN: its artifact is package data too.
  [path.join('contracts', 'test'), path.join('tests', 'contracts', 'artifacts'), ['TestToken']],
];

function parseArgs(argv) {
  const opts = { out: ROOT, runs: DEFAULT_RUNS, viaIR: DEFAULT_VIA_IR };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--out') opts.out = path.resolve(argv[++i]);
    else if (arg === '--runs') opts.runs = Number.parseInt(argv[++i], 10);
    else if (arg === '--via-ir') opts.viaIR = true;
    else if (arg === '--no-via-ir') opts.viaIR = false;
    else throw new Error(`unknown argument ${arg}`);
  }
  if (!Number.isInteger(opts.runs) || opts.runs < 1) throw new Error('--runs needs a positive integer');
  return opts;
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    const out = {};
    for (const key of Object.keys(value).sort()) out[key] = sortKeys(value[key]);
    return out;
  }
  return value;
}

function sha256(text) {
  return crypto.createHash('sha256').update(text, 'utf8').digest('hex');
}

function compileUnit(sourceDir, opts) {
  const dir = path.join(ROOT, sourceDir);
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.sol')).sort();
  const sources = {};
  for (const file of files) {
    // Forward slashes: the source names end up in the metadata, which must not depend on the OS.
    const name = `${sourceDir.split(path.sep).join('/')}/${file}`;
    sources[name] = { content: fs.readFileSync(path.join(dir, file), 'utf8') };
  }
  const optimizer = { enabled: true, runs: opts.runs };
  const input = {
    language: 'Solidity',
    sources,
    settings: {
      evmVersion: EVM_VERSION,
      optimizer,
      viaIR: opts.viaIR,
      // No IPFS hash of the metadata in the bytecode: the code then depends on what the source
      // means, not on its comments; the artifact's sourceHash still pins the exact text.
      metadata: { bytecodeHash: 'none' },
      outputSelection: {
        '*': {
          '*': [
            'abi',
            'evm.bytecode.object',
            'evm.deployedBytecode.object',
            'evm.deployedBytecode.immutableReferences',
          ],
        },
      },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const problems = (output.errors || []).filter((e) => e.severity === 'error');
  for (const e of output.errors || []) process.stderr.write(`${e.formattedMessage}\n`);
  if (problems.length) throw new Error(`solc reported ${problems.length} error(s)`);

  // Every source of the unit: a contract's code depends on the files it imports too.
  const sourceHashes = {};
  for (const name of Object.keys(sources)) sourceHashes[name] = sha256(sources[name].content);
  const artifacts = [];
  for (const name of Object.keys(sources)) {
    for (const [contractName, c] of Object.entries(output.contracts[name] || {})) {
      // Abstract contracts (the Adjudicator's parts) have no code of their own: no artifact.
      if (!c.evm.bytecode.object) continue;
      artifacts.push({
        contractName,
        sourceName: name,
        sourceHash: sha256(sources[name].content),
        sourceHashes,
        abi: c.abi,
        bytecode: `0x${c.evm.bytecode.object}`,
        deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
        immutableReferences: c.evm.deployedBytecode.immutableReferences || {},
        compiler: {
          version: solc.version(),
          evmVersion: EVM_VERSION,
          optimizer,
          viaIR: opts.viaIR,
        },
      });
    }
  }
  return artifacts;
}

function main() {
  const version = solc.version();
  if (!version.startsWith(`${SOLC_VERSION}+`)) {
    throw new Error(`solc ${SOLC_VERSION} is pinned but node_modules has ${version}: run \`make deps\``);
  }
  const opts = parseArgs(process.argv.slice(2));
  for (const [sourceDir, outDir, packaged] of UNITS) {
    for (const artifact of compileUnit(sourceDir, opts)) {
      const dirs = packaged.includes(artifact.contractName) ? [outDir, PACKAGE] : [outDir];
      for (const dir of dirs) {
        const target = path.join(opts.out, dir);
        fs.mkdirSync(target, { recursive: true });
        const file = path.join(target, `${artifact.contractName}.json`);
        fs.writeFileSync(file, `${JSON.stringify(sortKeys(artifact), null, 2)}\n`);
        process.stdout.write(`wrote ${path.relative(process.cwd(), file)}\n`);
      }
    }
  }
}

try {
  main();
} catch (err) {
  process.stderr.write(`compile.js: ${err.message}\n`);
  process.exit(1);
}
