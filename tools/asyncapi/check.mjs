// Parse each AsyncAPI document with the official parser (@asyncapi/parser) and print every
// diagnostic; exit 1 on any error or warning. Usage: node check.mjs FILE...
// (Used by tests/test_official_parser.py; `make asyncapi-tools` installs the parser.)
import { Parser, fromFile } from '@asyncapi/parser';

const parser = new Parser();
const severities = ['error', 'warning', 'info', 'hint'];
let bad = 0;
for (const path of process.argv.slice(2)) {
  const { document, diagnostics } = await fromFile(parser, path).parse();
  for (const d of diagnostics) {
    const where = d.path && d.path.length ? d.path.join('.') : '(root)';
    const level = severities[d.severity] ?? String(d.severity);
    console.log(`${path}: ${level}: ${d.code}: ${where}: ${d.message}`);
    if (d.severity <= 1) bad += 1;
  }
  if (document === undefined) bad += 1;
  else console.log(`${path}: parsed`);
}
console.log(`${bad} errors or warnings`);
process.exit(bad ? 1 : 0);
