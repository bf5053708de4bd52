// Renders badges with shields.io's own renderer (npm badge-maker) for
// tests/test_looks.py: reads a JSON list of makeBadge() arguments on stdin,
// writes the list of SVG strings on stdout.
import { makeBadge } from 'badge-maker'

let input = ''
process.stdin.on('data', chunk => { input += chunk })
process.stdin.on('end', () => {
  process.stdout.write(JSON.stringify(JSON.parse(input).map(args => makeBadge(args))))
})
