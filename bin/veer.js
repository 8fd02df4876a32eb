#!/usr/bin/env node
// veer's command line. The sources are TypeScript run by Node's built-in type stripping (Node >= 22.18),
// so an older Node gets one clear line instead of a syntax error.
const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 19)) {
  process.stderr.write(
    `veer: needs Node.js >= 22.19 (this is ${process.versions.node}); run it through npm (npm run, npx) so the project's Node 24 is used\n`,
  )
  process.exit(2)
}
const { main } = await import('../cli/main.ts')
await main(process.argv.slice(2))
