import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
const [source, wit, out] = process.argv.slice(2);
const { component } = await componentize({ sourcePath: source, witPath: wit, worldName: 'plugin', disableFeatures: ['http', 'fetch-event'] });
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
