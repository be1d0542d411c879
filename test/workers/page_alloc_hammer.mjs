// A vCPU that hammers the page allocator (compiled JS from dist/): random alloc/free of
// order 0..3, hot and cold, compound pages with tail get/put. Each page it holds carries a
// token in page->private; a token found changed means another CPU was handed the same page.
import { parentPort, workerData } from 'node:worker_threads';
import {
  PageAllocator,
  GFP_KERNEL,
  GFP_ATOMIC,
  GFP_HIGHUSER,
  __GFP_COLD,
  __GFP_COMP,
  __GFP_NOWARN,
} from '../../dist/guest/mm/page_alloc.js';

const { sab, cpu, iterations, seed } = workerData;
const pa = new PageAllocator(sab, { zeroPage: () => {} });
const mm = pa.memMap;
let x = seed >>> 0 || 1;
const rnd = (n) => {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  x >>>= 0;
  return x % n;
};
const GFPS = [GFP_KERNEL, GFP_ATOMIC, GFP_HIGHUSER, GFP_KERNEL | __GFP_COLD, GFP_KERNEL | __GFP_COMP];
const held = []; // [pfn, order, comp, token]
let allocs = 0;
let failures = 0;
let tokenSeq = 1;

function release(i) {
  const [pfn, order, comp, token] = held[i];
  held[i] = held[held.length - 1];
  held.pop();
  for (let p = pfn; p < pfn + (1 << order); p++) {
    if (mm.private[p] !== token) throw new Error(`cpu${cpu}: pfn ${p} token ${mm.private[p]} != ${token}`);
    mm.private[p] = 0;
  }
  if (comp) {
    mm.getPage(pfn + (1 << order) - 1);
    mm.putPage(pfn + 1, cpu);
    mm.putPage(pfn, cpu);
  } else if (order === 0 && rnd(3) === 0) {
    mm.putPageTestzero(pfn, 'hammer', cpu);
    pa.freeColdPage(pfn, cpu);
  } else {
    pa.freePages(pfn, order, cpu);
  }
}

for (let it = 0; it < iterations; it++) {
  if (held.length < 400 && (held.length === 0 || rnd(100) < 55)) {
    const gfp = GFPS[rnd(GFPS.length)] | __GFP_NOWARN;
    const r = rnd(10);
    let order = r < 7 ? 0 : r < 9 ? 1 + rnd(2) : 3;
    if (gfp & __GFP_COMP && order === 0) order = 1;
    const pfn = pa.allocPages(gfp, order, cpu);
    if (pfn === -1) {
      failures++;
      continue;
    }
    allocs++;
    const token = ((cpu + 1) << 24) | (tokenSeq++ & 0xffffff);
    for (let p = pfn; p < pfn + (1 << order); p++) {
      if (mm.private[p] !== 0) throw new Error(`cpu${cpu}: fresh pfn ${p} has private ${mm.private[p]}`);
      mm.private[p] = token;
    }
    held.push([pfn, order, (gfp & __GFP_COMP) !== 0, token]);
  } else {
    release(rnd(held.length));
  }
}
while (held.length) release(held.length - 1);
pa.drainLocalPages(cpu);
parentPort.postMessage({ allocs, failures, held: held.length });
