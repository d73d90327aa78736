// paylive.d.ts declares exactly what paylive.js exports, each as the right kind of
// thing. Needs the `typescript` package of this folder (npm ci).

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { test } from 'node:test';

import ts from 'typescript';

import * as client from 'paylive-client';

// Where the installed package is, as a consumer's tools find it (through its exports).
const root = dirname(createRequire(import.meta.url).resolve('paylive-client/package.json'));
const declarations = join(root, 'paylive.d.ts');

function declaredValues() {
  const program = ts.createProgram([declarations], { noEmit: true });
  const checker = program.getTypeChecker();
  const module = checker.getSymbolAtLocation(program.getSourceFile(declarations));
  const values = new Map();
  for (const symbol of checker.getExportsOfModule(module)) {
    if (!(symbol.flags & ts.SymbolFlags.Value)) continue; // a type alone: nothing at run time
    const callable = symbol.flags & (ts.SymbolFlags.Class | ts.SymbolFlags.Function);
    values.set(symbol.name, callable ? 'function' : 'value');
  }
  return values;
}

test('the declarations name every export of the module, and nothing else', () => {
  const declared = declaredValues();
  assert.deepEqual([...declared.keys()].sort(), Object.keys(client).sort());
});

test('classes and functions are declared as such, constants as values', () => {
  for (const [name, kind] of declaredValues()) {
    const actual = typeof client[name] === 'function' ? 'function' : 'value';
    assert.equal(actual, kind, name);
  }
});
