/**
 * Value-extraction benchmark: one ~200 KB product-listing page, generated deterministically (seeded
 * PRNG: the same bytes on every run), through `extractAll` with a typical monitor's 6 extractors.
 *
 *   node bench/extract.ts                    (BENCH_ITERATIONS=500, BENCH_WARMUP=50)
 *
 * "bare htmlparser2 parse" is `parseDocument` alone on the same page, in the same run: the yardstick.
 * "parse only" is `extractAll` with one CSS extractor that matches the first element (tree building
 * dominates); "parse + extract" runs the full set. Each iteration parses the page anew, as a
 * monitor check does. Prints a markdown table with p50/p99 per case and the ratio to the bare parse.
 * Goal: parse + extract ≤ 1.5 × the bare parse.
 */
import { parseDocument } from 'htmlparser2';
import type { ChildNode } from 'domhandler';
import { extractAll, type ExtractorSpec } from '../src/domains/monitoring/extract.ts';

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 500);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 50);

/** mulberry32: a tiny seeded PRNG, so the page is identical on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ADJECTIVES = ['Trail', 'Road', 'Ultra', 'Light', 'Storm', 'Alpine', 'Urban', 'Summit', 'Tempo', 'Glide'];
const NOUNS = ['Runner', 'Hiker', 'Racer', 'Walker', 'Trainer', 'Boot', 'Sandal', 'Climber'];
const BADGES = ['New', 'Sale', 'Bestseller', 'Eco', 'Limited'];
const STOCK = ['In stock', 'In stock', 'In stock', 'Only 2 left', 'Out of stock', 'Pre-order'];

/** A realistic listing page: head with styles, scripts and JSON-LD, mega-menu, filters, product grid, footer. */
function generateListingPage(targetBytes = 200 * 1024): string {
  const rnd = prng(20251122);
  const pick = <T>(list: T[]): T => list[Math.floor(rnd() * list.length)]!;
  const parts: string[] = [];
  parts.push(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Running Shoes | Acme Outfitters</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/assets/app.3f9a1c.css">
<style>.card{display:flex}.price-current{font-weight:700}.badge{color:#c00}</style>
<script>window.__STATE__={"page":"listing","filters":{"category":"running"},"tpl":"<div class='card'><span class='price-current' data-price='0'>$0</span></div>"};</script>
<script type="application/ld+json">{"@context":"https://schema.org","@type":"ItemList","name":"Running Shoes"}</script>
</head><body class="listing">
<header id="top"><a href="/" class="logo">Acme&nbsp;Outfitters</a><nav class="mega"><ul>`);
  for (let i = 0; i < 12; i++) {
    parts.push(`<li class="menu-item"><a href="/c/${i}">Category ${i}</a><ul class="sub">`);
    for (let j = 0; j < 8; j++) parts.push(`<li><a href="/c/${i}/${j}">Sub ${i}.${j}</a>`);
    parts.push('</ul></li>');
  }
  parts.push(`</ul></nav></header>
<main id="main"><aside class="filters"><h2>Filter</h2><form action="/search">`);
  for (let i = 0; i < 20; i++) {
    parts.push(`<label><input type=checkbox name=brand value=b${i}> Brand ${i} <span class=count>(${Math.floor(rnd() * 200)})</span></label>`);
  }
  parts.push(`</form></aside><section class="results"><h1 class="page-title">Running Shoes</h1>
<div class="toolbar"><span class="result-count">Showing <b>1</b>&ndash;<b>48</b> of 1,284</span></div>
<ul class="grid">`);
  let id = 1000;
  let length = parts.reduce((n, p) => n + p.length, 0);
  while (length < targetBytes - 400) {
    id++;
    const price = (20 + rnd() * 230).toFixed(2);
    const was = rnd() < 0.3 ? `<s class="price-was">$${(Number(price) * 1.25).toFixed(2)}</s>` : '';
    const badge = rnd() < 0.4 ? `<span class="badge">${pick(BADGES)}</span>` : '';
    const rating = (3 + rnd() * 2).toFixed(1);
    // Compact markup with many small elements, as component-built shops emit (~40 elements per card).
    const swatches = Array.from({ length: 10 }, () => `<span class="sw"><i></i></span>`).join('');
    parts.push(
      `<li class="card" data-id="${id}" data-brand="b${id % 20}"><a class="thumb" href="/p/${id}"><img src="/img/${id}.jpg" alt="${pick(NOUNS)}"></a>` +
        `<div class="info"><h3 class="title"><a href="/p/${id}">Acme ${pick(ADJECTIVES)} ${pick(NOUNS)} ${1 + (id % 5)}</a></h3>${badge}` +
        `<div class="rating"><span class="stars"><i></i><i></i><i></i><i></i><i></i></span><em>${rating}</em></div>` +
        `<div class="price">${was}<span class="price-current" data-price="${price}">$${price}</span></div>` +
        `<div class="swatches">${swatches}</div><span class="stock-status">${pick(STOCK)}</span><button class="add">Add</button></div></li>\n`,
    );
    length += parts[parts.length - 1]!.length;
  }
  parts.push(`</ul><nav class="pagination"><a href="?page=2" rel="next">Next &rsaquo;</a></nav></section></main>
<footer><p>&copy; 2025 Acme Outfitters</p></footer>
<script>document.querySelectorAll('.card').forEach(function (c) { c.dataset.seen = "<b>1</b>"; });</script>
</body></html>`);
  return parts.join('');
}

const PARSE_ONLY: ExtractorSpec[] = [{ type: 'css', selector: 'title', name: 'title' }];
const TYPICAL: ExtractorSpec[] = [
  { type: 'css', selector: 'h1.page-title', name: 'heading' },
  { type: 'css', selector: '.card .price-current', name: 'first_price', attribute: 'data-price' },
  { type: 'xpath', selector: "//span[@class='stock-status']/text()", name: 'first_stock' },
  { type: 'xpath', selector: "//li[@class='card'][.//span[@class='badge']='Sale']//h3/a", name: 'first_sale_title' },
  { type: 'regex', selector: '/Showing <b>\\d+<\\/b>&ndash;<b>(\\d+)<\\/b>/', name: 'page_size' },
  { type: 'css', selector: '.card .title a', name: 'all_titles', multiple: true },
];

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface Stats {
  p50: number;
  p99: number;
  mean: number;
}

function stats(times: number[]): Stats {
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p99: percentile(times, 99), mean: times.reduce((a, b) => a + b, 0) / times.length };
}

/** Wall time of whole `extractAll` calls, and the part of each spent in the extractors (its extractMs). */
function measure(page: string, specs: ExtractorSpec[]): { total: Stats; extract: Stats } {
  for (let i = 0; i < WARMUP; i++) extractAll(page, 'text/html; charset=utf-8', specs);
  const totals: number[] = [];
  const extracts: number[] = [];
  for (let i = 0; i < ITERATIONS; i++) {
    const t = performance.now();
    const result = extractAll(page, 'text/html; charset=utf-8', specs);
    totals.push(performance.now() - t);
    extracts.push(result.extractMs);
    const failed = result.values.find((v) => v.warning !== null);
    if (failed) throw new Error(`extractor ${failed.name} failed: ${failed.warning}`);
  }
  return { total: stats(totals), extract: stats(extracts) };
}

function measureBare(page: string): Stats {
  for (let i = 0; i < WARMUP; i++) parseDocument(page);
  const times: number[] = [];
  for (let i = 0; i < ITERATIONS; i++) {
    const t = performance.now();
    parseDocument(page);
    times.push(performance.now() - t);
  }
  return stats(times);
}

function countElements(nodes: ChildNode[]): number {
  let n = 0;
  for (const node of nodes) {
    if (node.type === 'tag' || node.type === 'script' || node.type === 'style') n++;
    if ('children' in node) n += countElements(node.children as ChildNode[]);
  }
  return n;
}

const page = generateListingPage();
const kb = (Buffer.byteLength(page) / 1024).toFixed(0);
const elements = countElements(parseDocument(page).children);
const bare = measureBare(page);
const sample = extractAll(page, 'text/html', TYPICAL);
const parseOnly = measure(page, PARSE_ONLY);
const full = measure(page, TYPICAL);

console.log(`Page: ${kb} KB, ${elements} elements, ${(sample.values[5]!.value as unknown[]).length} product cards; ${ITERATIONS} iterations after ${WARMUP} warm-up; Node ${process.version}\n`);
console.log('| case | page KB | extractors | p50 ms | p99 ms | mean ms |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
const row = (label: string, count: number, s: Stats): string =>
  `| ${label} | ${kb} | ${count} | ${s.p50.toFixed(2)} | ${s.p99.toFixed(2)} | ${s.mean.toFixed(2)} |`;
console.log(row('bare htmlparser2 parse', 0, bare));
console.log(row('parse only', PARSE_ONLY.length, parseOnly.total));
console.log(row('parse + extract', TYPICAL.length, full.total));
console.log(row('(of which the extractors)', TYPICAL.length, full.extract));
console.log('\nPer extractor (extraction only, p50 ms over the same iterations):');
for (const spec of TYPICAL) {
  const times: number[] = [];
  for (let i = 0; i < Math.min(ITERATIONS, 200); i++) times.push(extractAll(page, 'text/html', [spec]).extractMs);
  console.log(`- ${spec.type} ${spec.selector}${spec.multiple ? ' (multiple)' : ''}: ${stats(times).p50.toFixed(3)}`);
}
const ratio = full.total.p50 / bare.p50;
console.log(`\nparse + extract / bare parse (p50): ${ratio.toFixed(2)}× — goal ≤ 1.5×: ${ratio <= 1.5 ? 'PASS' : 'FAIL'}`);
console.log('\nValues of one run:');
for (const v of sample.values) {
  const shown = Array.isArray(v.value) ? `[${v.value.length} values, first ${JSON.stringify(v.value[0])}]` : JSON.stringify(v.value);
  console.log(`- ${v.name}: ${shown}`);
}
