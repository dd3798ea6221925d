/**
 * Value extraction on realistic pages: a messy product page (unclosed <p>/<li>, uppercase tags,
 * unquoted attributes, entities, look-alike markup inside <script>/<style>/comments, nested tables),
 * a JSON API response, and pages in windows-1251 and Shift_JIS as raw bytes.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import {
  decodeBody,
  extractAll,
  MAX_SELECTOR_LENGTH,
  REGEX_MAX_INPUT_CHARS,
  validateSelector,
  type ExtractedValue,
  type ExtractorSpec,
  type ExtractorType,
} from '../../src/domains/monitoring/extract.ts';

const fixture = (name: string): Buffer => readFileSync(new URL(`../fixtures/monitoring/${name}`, import.meta.url));
const PRODUCT = decodeBody(fixture('product.html'), 'text/html; charset=utf-8');
const API = fixture('api-response.json').toString('utf8');

/** Runs one extractor over a body and returns its result. */
function one(body: string, spec: Omit<ExtractorSpec, 'name'>, contentType = 'text/html'): ExtractedValue {
  const { values } = extractAll(body, contentType, [{ name: 'v', ...spec }]);
  assert.equal(values.length, 1);
  return values[0]!;
}

/** The value of one extractor, asserting it produced no warning. */
function value(body: string, type: ExtractorType, selector: string, extra: Partial<ExtractorSpec> = {}): unknown {
  const result = one(body, { type, selector, ...extra });
  assert.equal(result.warning, null, `${type} ${selector}: unexpected warning`);
  return result.value;
}

const css = (selector: string, extra?: Partial<ExtractorSpec>): unknown => value(PRODUCT, 'css', selector, extra);
const xpath = (selector: string, extra?: Partial<ExtractorSpec>): unknown => value(PRODUCT, 'xpath', selector, extra);
const jsonpath = (selector: string, extra?: Partial<ExtractorSpec>): unknown => value(API, 'jsonpath', selector, extra);

/** Each pair's first selector (answered from the name index) matches something, and the same as the second (a full walk). */
function assertSameMatches(run: (selector: string, extra?: Partial<ExtractorSpec>) => unknown, cases: [string, string][]): [string, string[]][] {
  return cases.map(([indexed, walked]) => {
    const got = run(indexed, { multiple: true }) as string[];
    assert.ok(got.length > 0, `${indexed} matches something`);
    assert.deepEqual(got, run(walked, { multiple: true }), indexed);
    return [indexed, got];
  });
}

describe('the documented examples', () => {
  test('css .price-current with attribute data-price, and xpath stock-status text()', () => {
    const { values } = extractAll(PRODUCT, 'text/html; charset=utf-8', [
      { type: 'css', selector: '.price-current', name: 'current_price', attribute: 'data-price' },
      { type: 'xpath', selector: "//span[@class='stock-status']/text()", name: 'stock_status' },
    ]);
    assert.deepEqual(values, [
      { name: 'current_price', value: '129.99', warning: null },
      { name: 'stock_status', value: 'In stock', warning: null },
    ]);
  });
});

describe('css', () => {
  test('text is normalized: inline markup joined, entities decoded, &nbsp; and newlines collapsed', () => {
    assert.equal(css('.price-current'), '$129.99');
    assert.equal(css('h1'), 'Acme Trail Runner 3');
    assert.equal(css('.price-save'), 'Save $30.00 (19%)');
    assert.equal(css('.breadcrumb'), 'Home › Men › Shoes › Trail Runner 3');
    assert.equal(css('title'), "Acme Trail Runner 3 – Men's Running Shoe | Acme Outfitters");
  });

  test('block elements and <br> separate words', () => {
    assert.equal(css('table.swatches'), 'Red Black Olive');
    assert.equal(css('.specs tr:nth-child(4) td'), 'Recycled mesh TPU overlays');
    assert.equal(css('.review'), 'Great grip on wet rock. — Sam');
  });

  test('look-alike markup in <script>, <style> and comments is never matched nor read as text', () => {
    assert.deepEqual(css('.stock-status', { multiple: true }), ['In stock']);
    assert.deepEqual(css('.price-current', { multiple: true, attribute: 'data-price' }), ['129.99']);
    assert.equal(css('head'), "Acme Trail Runner 3 – Men's Running Shoe | Acme Outfitters");
    assert.equal((css('body') as string).includes('never'), false);
    assert.equal((css('body') as string).includes('dataSet'), false);
  });

  test('a selected <script> keeps its own text', () => {
    assert.match(css('head script') as string, /^\/\/ Look-alike markup .* window\.dataLayer = \[\{"sku": "ATR3-M-42", "price": 129\.99\}\];$/);
  });

  test('unclosed <li>/<p>/<option>, uppercase tags and unquoted attributes parse as a browser would', () => {
    assert.deepEqual(css('.features li', { multiple: true }), ['GripMax™ outsole', 'Rock plate', 'Recycled upper', 'Gusseted tongue']);
    assert.equal(css('UL.nav LI.active'), 'Sale & Clearance');
    assert.equal(css('div.product', { attribute: 'data-sku' }), 'ATR3-M-42');
    assert.equal(css('.price-current', { attribute: 'data-currency' }), 'USD');
    assert.deepEqual(css('#reviews .author', { multiple: true }), ['— Sam', '— Jo', '— Alex']);
    assert.deepEqual(css('#size option', { multiple: true, attribute: 'value' }), ['40', '41', '42', '43']);
    assert.equal(css('#size option[selected]'), 'EU 42');
    assert.equal(css('p.tagline'), 'Built for mud, rocks & everything between.');
  });

  test('attribute values are returned raw (entities decoded)', () => {
    assert.equal(css('meta[name=description]', { attribute: 'content' }), 'Lightweight trail shoe with "GripMax" outsole');
    assert.equal(css('.rating', { attribute: 'title' }), '4.6 out of 5');
    assert.equal(css('.rating', { attribute: 'TITLE' }), '4.6 out of 5', 'HTML attribute names are case-insensitive');
  });

  test('nested tables and the implied <tbody> of browsers', () => {
    assert.equal((css('table.specs > tbody > tr', { multiple: true }) as string[]).length, 4);
    assert.deepEqual(css('table.swatches td', { multiple: true, attribute: 'data-colour' }), ['red', 'black', 'olive']);
    assert.deepEqual(css('.specs > tbody > tr > th', { multiple: true }), ['Weight', 'Drop', 'Colours', 'Upper']);
  });

  test('a selector ending in a tag (answered from the name index) matches what the full walk matches', () => {
    // `*:is(x)` has no tag in its last compound, so css-select walks every element: the reference.
    const cases: [string, string][] = [
      ['table td', 'table *:is(td)'],
      ['.specs tbody tr', '.specs tbody *:is(tr)'],
      ['#header A', '#header *:is(a)'],
      ['ul li', 'ul *:is(li)'],
      ['div div span', 'div div *:is(span)'],
      ['body p', 'body *:is(p)'],
    ];
    assertSameMatches(css, cases);
  });

  test('multiple with attribute skips elements that lack it; first-match mode too', () => {
    const hrefs = css('.card a, .card', { multiple: true, attribute: 'href' });
    assert.deepEqual(hrefs, ['/p/101', '/p/102', '/p/103']);
    assert.equal(css('#header a, #header li', { attribute: 'href' }), '/');
  });

  test('pseudo-classes: :nth-child, :not, :has, :contains', () => {
    assert.equal(css('.card:nth-child(3) a'), 'Acme Trail Runner 2');
    assert.deepEqual(css('.card:not(.sale) .price', { multiple: true }), ['$99.00', '$89.50']);
    assert.equal(css('.review:has(p:contains("small")) .author'), '— Jo');
  });

  test('no match is null with a warning, never a throw', () => {
    const r = one(PRODUCT, { type: 'css', selector: '.does-not-exist' });
    assert.equal(r.value, null);
    assert.match(r.warning!, /no element matches CSS selector '\.does-not-exist'/);
    const multi = one(PRODUCT, { type: 'css', selector: '.nope', multiple: true });
    assert.equal(multi.value, null);
    assert.ok(multi.warning);
  });

  test('matched elements without the requested attribute: null with a warning that says so', () => {
    const r = one(PRODUCT, { type: 'css', selector: '.card', attribute: 'data-missing' });
    assert.equal(r.value, null);
    assert.match(r.warning!, /3 element\(s\) match but none has the attribute 'data-missing'/);
  });
});

describe('xpath', () => {
  test('element names match case-insensitively in HTML', () => {
    assert.equal(xpath("//DIV[@ID='header']/A"), 'Acme Outfitters');
    assert.equal(xpath('//TITLE'), xpath('//title'));
    assert.equal(xpath("//span[@CLASS='price-current']/@DATA-PRICE"), '129.99');
  });

  test('node-set values: elements as normalized text, text nodes trimmed, attributes raw', () => {
    assert.equal(xpath('//h1'), 'Acme Trail Runner 3');
    assert.equal(xpath("//span[@class='stock-status']/text()"), 'In stock');
    assert.equal(xpath('//h1/@class'), 'product-title');
    assert.deepEqual(xpath("//ul[@class='features']/li", { multiple: true }), ['GripMax™ outsole', 'Rock plate', 'Recycled upper', 'Gusseted tongue']);
    assert.deepEqual(xpath('//option/@value', { multiple: true }), ['40', '41', '42', '43']);
  });

  test('scalar results are returned as they are', () => {
    assert.equal(xpath('count(//div[@class="card" or @class="card sale"])'), 3);
    assert.equal(xpath('string(//b)'), '4.6');
    assert.equal(xpath('boolean(//form[@method="post"])'), true);
    assert.equal(xpath('boolean(//form[@method="get"])'), false);
    assert.equal(xpath('number(//b) * 2'), 9.2);
  });

  test('the attribute option reads an attribute of the matched elements', () => {
    assert.equal(xpath("//div[contains(@class,'card')][last()]/a", { attribute: 'href' }), '/p/103');
    assert.deepEqual(xpath("//div[contains(@class,'card')]", { attribute: 'data-id', multiple: true }), ['101', '102', '103']);
  });

  test('//name inside an element (answered from the name index) selects what the tree walk selects', () => {
    // `*[local-name()='x']` is not a plain name test, so it walks the subtree: the reference.
    const cases: [string, string][] = [
      ['//table//td', "//table//*[local-name()='td']"],
      ["//table[@class='specs']//tr", "//table[@class='specs']//*[local-name()='tr']"],
      ['//tbody//th', "//tbody//*[local-name()='th']"],
      ['//div//div//span', "//div//div//*[local-name()='span']"],
      ["//*[@id='header']//A", "//*[@id='header']//*[local-name()='a']"],
      ['//ul//li', "//ul//*[local-name()='li']"],
      ["//div[.//a][last()]//a", "//div[.//a][last()]//*[local-name()='a']"],
    ];
    for (const [indexed, got] of assertSameMatches(xpath, cases)) assert.equal(xpath(`count(${indexed})`), got.length, `count(${indexed})`);
    // Elements of another branch never leak in, also at the end of the document.
    assert.equal(xpath("count(//div[contains(@class,'card')][1]//a)"), 1);
    assert.equal(xpath('count(//footer//table)'), 0);
  });

  test('XML documents keep the index case-sensitive', () => {
    const feed = '<?xml version="1.0"?><feed><Entry><title>A</title></Entry><entry><title>b</title><entry><title>c</title></entry></entry></feed>';
    const xml = (type: ExtractorType, selector: string): unknown => {
      const r = one(feed, { type, selector, multiple: true }, 'application/xml');
      assert.equal(r.warning, null, selector);
      return r.value;
    };
    assert.deepEqual(xml('xpath', '//entry//title'), ['b', 'c']);
    assert.deepEqual(xml('xpath', '//feed//Entry/title'), ['A']);
    assert.deepEqual(xml('xpath', '//entry/entry//title'), ['c']);
    assert.deepEqual(xml('css', 'feed Entry title'), ['A']);
    assert.deepEqual(xml('css', 'feed entry title'), ['b', 'c']);
  });

  test('location paths: absolute, relative, //, and the tbody that browsers insert', () => {
    assert.equal(xpath('/html/head/title'), "Acme Trail Runner 3 – Men's Running Shoe | Acme Outfitters");
    // What devtools' "Copy full XPath" gives for the product title.
    assert.equal(xpath('/html/body/div[2]/div[1]/h1'), 'Acme Trail Runner 3');
    assert.equal(xpath("//*[@id='main']//table[@class='specs']/tbody/tr[2]/td"), '6 mm');
    assert.equal(xpath("//div[@id='reviews']/div/p[@class='author']"), '— Sam');
    assert.equal(xpath('/'), xpath('/html'), 'the root and the html element read the same text');
  });

  test('axes', () => {
    assert.equal(xpath("//div[@class='price-box']/child::span[2]"), '$129.99');
    assert.equal(xpath("//div[@id='main']/descendant::h1"), 'Acme Trail Runner 3');
    assert.equal(xpath("count(//table[@class='specs']/descendant-or-self::table)"), 2);
    assert.equal(xpath("//li/self::li[@class='new']"), 'Recycled upper');
    assert.equal(xpath('//b/parent::span/@class'), 'price-current');
    assert.equal(xpath("//td[@data-colour='olive']/ancestor::table[1]/@class"), 'swatches', 'ancestor is a reverse axis: [1] is the nearest');
    assert.equal(xpath("//td[@data-colour='olive']/ancestor::table[last()]/@class"), 'specs');
    // td, tr, tbody, table.swatches, td, tr, tbody, table.specs, div.product, div#main, body, html
    assert.equal(xpath("count(//td[@data-colour='red']/ancestor-or-self::*)"), 12);
    assert.equal(xpath("//th[.='Drop']/following-sibling::td"), '6 mm');
    assert.deepEqual(xpath("//li[@class='new']/preceding-sibling::li", { multiple: true }), ['GripMax™ outsole', 'Rock plate']);
    assert.equal(xpath("//li[@class='new']/preceding-sibling::li[1]"), 'Rock plate', 'preceding-sibling::li[1] is the nearest');
    assert.equal(xpath("//p[@class='rating']/following::span[1]"), '$159.99');
    assert.equal(xpath("//span[@class='delivery']/preceding::span[1]"), 'In stock');
    assert.equal(xpath("//span[@class='delivery']/preceding::h1"), 'Acme Trail Runner 3');
    assert.equal(xpath('//form/attribute::method'), 'post');
    assert.equal(xpath('//form/@action/parent::form/@method'), 'post', 'an attribute has its element as parent');
  });

  test('node tests: *, text(), node(), comment()', () => {
    assert.deepEqual(xpath("//div[@class='price-box']/*", { multiple: true }), ['$159.99', '$129.99', 'Save $30.00 (19%)']);
    assert.equal(xpath("//span[@class='price-current']/text()"), '$');
    assert.equal(xpath("count(//span[@class='price-current']/node())"), 3);
    assert.equal(xpath('//comment()'), '<span class="stock-status">Commented out</span>');
    assert.equal(xpath("count(//div[@class='price-box']/node())"), 7, 'whitespace text nodes count as nodes');
  });

  test('abbreviations: . .. @attr @*', () => {
    assert.equal(xpath("//b/../@class"), 'rating');
    assert.equal(xpath("//span/b/../@class"), 'price-current');
    assert.equal(xpath("//th[.='Weight']/../td"), '289 g');
    assert.equal(xpath("//th[. = 'Upper']/following-sibling::td/."), 'Recycled mesh TPU overlays');
    assert.deepEqual(xpath("//span[@class='price-current']/@*", { multiple: true }), ['price-current', '129.99', 'USD']);
    assert.equal(xpath("count(//select/@*)"), 2);
  });

  test('predicates: positions, last(), comparisons, and/or, arithmetic', () => {
    assert.deepEqual(xpath('//li[1]', { multiple: true }), ['Men', 'GripMax™ outsole'], '//li[1] is the first li of each list');
    assert.equal(xpath('(//li)[1]'), 'Men');
    assert.equal(xpath('(//li)[last()]'), 'Gusseted tongue');
    assert.equal(xpath("//ul[@class='features']/li[last() - 1]"), 'Recycled upper');
    assert.deepEqual(xpath("//ul[@class='features']/li[position() > 2]", { multiple: true }), ['Recycled upper', 'Gusseted tongue']);
    assert.deepEqual(xpath("//ul[@class='features']/li[position() mod 2 = 0]", { multiple: true }), ['Rock plate', 'Gusseted tongue']);
    assert.deepEqual(xpath("//div[@class='review'][@data-stars >= 4]/p[1]", { multiple: true }), ['Great grip on wet rock.', 'Runs a bit small.']);
    assert.equal(xpath("//div[@class='review'][@data-stars < 3]/p[@class='author']"), '— Alex');
    assert.equal(xpath("//div[@class='review'][@data-stars > 2 and @data-stars <= 4]/p[@class='author']"), '— Jo');
    assert.deepEqual(xpath("//div[@data-stars = 5 or @data-stars = 2]/@data-stars", { multiple: true }), ['5', '2']);
    assert.equal(xpath("//div[@class='review'][@data-stars != 5][1]/p"), 'Runs a bit small.');
    assert.equal(xpath("//div[@class='review'][@data-stars * 2 = 8]/p"), 'Runs a bit small.');
    assert.equal(xpath("//div[@class='review'][@data-stars div 2 = 1]/p"), 'Sole peeled after 300 km.');
    assert.equal(xpath("//option[@value = 40 + 2]"), 'EU 42');
    assert.equal(xpath("//option[-@value = -43]"), 'EU 43');
    assert.equal(xpath("//div[contains(@class,'card')][not(contains(@class,'sale'))][2]/a"), 'Acme Trail Runner 2');
    assert.equal(xpath("//table[.//td[@data-colour='olive']][1]/@class"), 'specs', 'a node-set predicate is true when non-empty');
  });

  test('unions come back in document order without duplicates', () => {
    assert.deepEqual(
      xpath("//div[@class='card sale']/span | //div[@class='card']/span | //div[@class='card']/span", { multiple: true }),
      ['$99.00', '$89.50', '$119.00'],
    );
    assert.deepEqual(xpath('//h2 | //h1', { multiple: true }), ['Acme Trail Runner 3', 'Specifications', 'Features', 'You may also like']);
    assert.deepEqual(xpath("//form/@method | //form/@action", { multiple: true }), ['/cart/add', 'post']);
  });

  test('core function library', () => {
    assert.equal(xpath("count(//div[@id='reviews']/div)"), 3);
    assert.equal(xpath("string(//p[@class='rating']/@title)"), '4.6 out of 5');
    assert.equal(xpath("concat(//span[@class='price-current']/@data-price, ' ', //span[@class='price-current']/@data-currency)"), '129.99 USD');
    assert.equal(xpath("(//a[starts-with(@href, '/p/')])[2]"), 'Acme Trail Runner 2');
    assert.equal(one(PRODUCT, { type: 'xpath', selector: "//a[starts-with(@href, '/p/')][2]" }).value, null, 'no card has a second link');
    assert.equal(xpath("substring-before(//p[@class='rating']/@title, ' out')"), '4.6');
    assert.equal(xpath("substring-after(//span[@class='price-save'], '(')"), '19%)');
    assert.equal(xpath("substring('12345', 2, 3)"), '234');
    assert.equal(xpath("substring('12345', 1.5, 2.6)"), '234');
    assert.equal(xpath("substring('12345', 0, 3)"), '12');
    assert.equal(xpath("substring('12345', 0 div 0, 3)"), '');
    assert.equal(xpath("substring('12345', -42, 1 div 0)"), '12345');
    assert.equal(xpath("string-length(normalize-space(//li[@class='new']))"), 14);
    assert.equal(xpath("normalize-space('  a \n\t b  ')"), 'a b');
    // String-values inside expressions are raw (XPath 1.0): the &nbsp; is still U+00A0 here.
    assert.equal(xpath("translate(//span[@class='price-save'], 'SAVE', 'save')"), 'save\u00a0$30.00 (19%)');
    assert.equal(xpath("translate('$1,299.00', '$,', '')"), '1299.00');
    assert.equal(xpath("count(//option[not(@disabled)])"), 3);
    assert.equal(xpath('true()'), true);
    assert.equal(xpath('false() or not(false())'), true);
    assert.equal(xpath("number(translate('1,284', ',', ''))"), 1284);
    assert.equal(xpath("sum(//div[@class='review']/@data-stars)"), 11);
    assert.equal(xpath('floor(4.6)'), 4);
    assert.equal(xpath('ceiling(4.2)'), 5);
    assert.equal(xpath('round(2.5)'), 3);
    assert.equal(xpath('round(-2.5)'), -2);
    assert.equal(xpath("boolean(//b[text()='4.6'])"), true);
    assert.equal(xpath("name(//*[@itemprop='name'])"), 'h1');
    assert.equal(xpath("local-name(//select/@*[1])"), 'id');
    assert.equal(xpath("//li[position() = last()]/a"), 'Sale & Clearance');
    assert.equal(xpath("//ul[@class='features']/li[normalize-space(text())='Rock plate']/following-sibling::li[1]"), 'Recycled upper');
    assert.equal(xpath("//*[lang('en')][1]/@lang"), 'en-GB');
    assert.equal(xpath("id('size')/option[@selected]/@value"), '42');
    assert.equal(xpath("//a[ends-with(@href, '/sale')]"), 'Sale & Clearance');
    assert.equal(xpath("upper-case(lower-case('MiXeD'))"), 'MIXED');
  });

  test('values inside inline scripts are reachable', () => {
    assert.equal(xpath(`substring-before(substring-after(//script[contains(., 'dataLayer')], '"sku": "'), '"')`), 'ATR3-M-42');
    assert.equal(xpath("count(//span[@class='stock-status'])"), 1, 'markup inside <script> is text, not elements');
  });

  test('string-values leave out script/style text but keep text of selected scripts', () => {
    assert.equal(xpath("contains(string(//head), 'dataLayer')"), false);
    assert.equal(xpath("contains(string(//head/script), 'dataLayer')"), true);
  });

  test('NaN and empty node-sets give null with a warning', () => {
    const nan = one(PRODUCT, { type: 'xpath', selector: "number(//h1)" });
    assert.equal(nan.value, null);
    assert.match(nan.warning!, /evaluates to NaN/);
    const none = one(PRODUCT, { type: 'xpath', selector: "//span[@class='stock-status-typo']/text()" });
    assert.equal(none.value, null);
    assert.match(none.warning!, /matches nothing/);
  });

  test('runtime type errors become warnings', () => {
    const r = one(PRODUCT, { type: 'xpath', selector: 'count(string(//h1)|//h1)' });
    assert.equal(r.value, null);
    assert.match(r.warning!, /^XPath: /);
  });

  test('XML bodies (feeds) are parsed as XML: case-sensitive names, <link> with text, CDATA as text', () => {
    const feed = `<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>Acme deals</title>
<item><title><![CDATA[Trail Runner 3 <b>-19%</b>]]></title><link>https://shop.example.com/p/atr3</link><dc:creator>Deals Bot</dc:creator><pubDate>Fri, 21 Nov 2025 10:00:00 GMT</pubDate></item>
<item><title>Hiker Mid</title><link>https://shop.example.com/p/103</link></item>
</channel></rss>`;
    const rss = (selector: string): unknown => one(feed, { type: 'xpath', selector }, 'application/rss+xml').value;
    assert.equal(rss('//item[1]/link'), 'https://shop.example.com/p/atr3');
    assert.equal(rss('//item[1]/title/text()'), 'Trail Runner 3 <b>-19%</b>');
    assert.equal(rss('//item/dc:creator'), 'Deals Bot');
    assert.equal(rss('count(//item)'), 2);
    assert.equal(one(feed, { type: 'xpath', selector: '//item[1]/link' }, 'text/html').value, '', 'as HTML, <link> is a void element');
    assert.equal(one(feed, { type: 'xpath', selector: '//pubdate' }, 'application/rss+xml').value, null);
    assert.equal(one(feed, { type: 'xpath', selector: '//pubDate' }, 'application/rss+xml').value, 'Fri, 21 Nov 2025 10:00:00 GMT');
    assert.deepEqual(one(feed, { type: 'css', selector: 'item > link', multiple: true }, 'application/xml').value, [
      'https://shop.example.com/p/atr3',
      'https://shop.example.com/p/103',
    ]);
  });
});

describe('jsonpath', () => {
  test('member access, bracket notation, indexes from either end', () => {
    assert.equal(jsonpath('$.data.product.price.amount'), 129.99);
    assert.equal(jsonpath("$['data']['product']['name']"), 'Acme Trail Runner 3');
    assert.equal(jsonpath('$.data.product.in_stock'), true);
    assert.equal(jsonpath('$.data.product.variants[0].sku'), 'ATR3-40');
    assert.equal(jsonpath('$.data.product.variants[-1].sku'), 'ATR3-43');
    assert.equal(jsonpath('$.data.product.tags[1]'), 'running');
  });

  test('a JSON null is a value, not a miss', () => {
    assert.deepEqual(one(API, { type: 'jsonpath', selector: '$.data.product.discontinued' }), { name: 'v', value: null, warning: null });
  });

  test('objects and arrays come back as JSON values', () => {
    assert.deepEqual(jsonpath('$.data.product.price'), { amount: 129.99, currency: 'USD', was: 159.99 });
    assert.deepEqual(jsonpath('$.data.product.tags'), ['trail', 'running', 'men']);
    assert.deepEqual(jsonpath('$'), JSON.parse(API));
  });

  test('wildcards, recursive descent, unions and slices', () => {
    assert.deepEqual(jsonpath('$.data.product.variants[*].size', { multiple: true }), [40, 41, 42, 43]);
    assert.deepEqual(jsonpath('$..amount', { multiple: true }), [129.99, 99, 89.5]);
    assert.equal(jsonpath('$..amount'), 129.99);
    assert.deepEqual(jsonpath('$.data.product.variants[0,2].sku', { multiple: true }), ['ATR3-40', 'ATR3-42']);
    assert.deepEqual(jsonpath("$.data.product.price['amount','currency']", { multiple: true }), [129.99, 'USD']);
    assert.deepEqual(jsonpath('$.data.product.variants[0:2].sku', { multiple: true }), ['ATR3-40', 'ATR3-41']);
    assert.deepEqual(jsonpath('$.data.product.variants[-2:].sku', { multiple: true }), ['ATR3-42', 'ATR3-43']);
  });

  test('filters with comparisons, && and ||', () => {
    assert.equal(jsonpath('$.data.product.variants[?(@.price < 10)].sku'), 'ATR3-43');
    assert.deepEqual(jsonpath('$.data.product.variants[?(@.stock > 0 && @.price < 125)].size', { multiple: true }), [42, 43]);
    assert.deepEqual(jsonpath('$.data.product.variants[?(@.stock == 0 || @.size == 43)].sku', { multiple: true }), ['ATR3-41', 'ATR3-43']);
    assert.deepEqual(jsonpath("$.data.related[?@.name == 'Acme Road Runner'].price.amount"), 99);
    assert.deepEqual(jsonpath('$.data.product.variants[?@.stock].sku', { multiple: true }), ['ATR3-40', 'ATR3-41', 'ATR3-42', 'ATR3-43']);
  });

  test('no match: null with a warning; a body that is not JSON: null with a warning', () => {
    const miss = one(API, { type: 'jsonpath', selector: '$.data.product.variants[?(@.price > 1000)]' });
    assert.equal(miss.value, null);
    assert.match(miss.warning!, /matches nothing/);
    const notJson = one(PRODUCT, { type: 'jsonpath', selector: '$.data' });
    assert.equal(notJson.value, null);
    assert.match(notJson.warning!, /^JSONPath: body is not valid JSON/);
  });

  test('a BOM before the JSON does not break parsing', () => {
    assert.equal(value(`\ufeff${API}`, 'jsonpath', '$.meta.request_id'), 'req_8f2c');
  });
});

describe('regex', () => {
  test('capture group 1 when the pattern has one, else the whole match', () => {
    assert.equal(value(PRODUCT, 'regex', 'data-currency=(\\w+)'), 'USD');
    assert.equal(value(PRODUCT, 'regex', 'ATR3-M-\\d+'), 'ATR3-M-42');
    assert.equal(value(PRODUCT, 'regex', '(?<sku>ATR3-M-\\d+)'), 'ATR3-M-42');
  });

  test('/pattern/flags honours the flags', () => {
    assert.equal(one(PRODUCT, { type: 'regex', selector: 'data-PRICE="([\\d.]+)"' }).value, null);
    assert.equal(value(PRODUCT, 'regex', '/data-PRICE="([\\d.]+)"/i'), '129.99');
    assert.equal(value(PRODUCT, 'regex', '/Weight<\\/th><td>(.+?)<\\/td>/s'), '289&nbsp;g');
    assert.equal(value('a/b', 'regex', 'a/b'), 'a/b', 'a pattern that only looks like a literal is a plain pattern');
    assert.equal(value('/usr/bin', 'regex', '/usr/bin'), '/usr/bin');
  });

  test('multiple returns every match (the g flag is implied)', () => {
    assert.deepEqual(value(PRODUCT, 'regex', 'data-id="(\\d+)"', { multiple: true }), ['101', '102', '103']);
    assert.deepEqual(value(PRODUCT, 'regex', '/DATA-ID="(\\d+)"/gi', { multiple: true }), ['101', '102', '103']);
    assert.deepEqual(value('a1b22c333', 'regex', '\\d+', { multiple: true }), ['1', '22', '333']);
  });

  test('no match: null with a warning', () => {
    const r = one(PRODUCT, { type: 'regex', selector: 'price:\\s*€\\d+' });
    assert.equal(r.value, null);
    assert.match(r.warning!, /matches nothing/);
  });

  test(`input is capped at ${REGEX_MAX_INPUT_CHARS} characters, with a warning`, () => {
    const body = `${'x'.repeat(REGEX_MAX_INPUT_CHARS)}price=42`;
    const beyond = one(body, { type: 'regex', selector: 'price=(\\d+)' });
    assert.equal(beyond.value, null);
    assert.match(beyond.warning!, /matches nothing; regex ran on the first 1000000 of 1000008 characters/);
    const within = one(`price=7${body}`, { type: 'regex', selector: 'price=(\\d+)' });
    assert.equal(within.value, '7');
    assert.match(within.warning!, /regex ran on the first/);
  });
});

describe('validateSelector', () => {
  const check = (type: ExtractorType, selector: string): string | null => validateSelector({ type, selector, name: 'x' });

  test('valid selectors of every type pass', () => {
    assert.equal(check('css', '.price-current'), null);
    assert.equal(check('css', 'ul.features > li:nth-child(2n+1):not(.new)'), null);
    assert.equal(check('xpath', "//span[@class='stock-status']/text()"), null);
    assert.equal(check('xpath', "(//div[@id='reviews']/div[@data-stars >= 4])[last()]/p[1] | //h1"), null);
    assert.equal(check('xpath', 'ancestor-or-self::node()[position() mod 2 = 1]/@*'), null);
    assert.equal(check('jsonpath', '$.data.product.variants[?(@.price < 10)].sku'), null);
    assert.equal(check('regex', '/price:\\s*(\\d+)/i'), null);
    assert.equal(check('regex', 'no groups at all'), null);
  });

  test('XPath messages say what and where', () => {
    assert.equal(check('xpath', "//span[@class=]"), "XPath: unexpected token ']' at position 14");
    assert.equal(check('xpath', '//span['), 'XPath: unexpected end of expression');
    assert.equal(check('xpath', '//div[]'), "XPath: unexpected token ']' at position 6, expected a predicate expression");
    assert.equal(check('xpath', "//a[@b='c]"), 'XPath: unterminated string literal starting at position 7');
    assert.equal(check('xpath', '//a[price(1)]'), "XPath: unknown function 'price()' at position 4");
    assert.equal(check('xpath', "//a[contains(@href)]"), "XPath: function 'contains()' takes 2 argument(s), got 1 (position 4)");
    assert.equal(check('xpath', "count('a')"), "XPath: function 'count()' needs a node-set argument, got a string (position 0)");
    assert.equal(check('xpath', '//a/sibling::b'), "XPath: unknown axis 'sibling' at position 4");
    assert.equal(check('xpath', '//a#b'), "XPath: unexpected character '#' at position 3");
    assert.equal(check('xpath', '$price'), 'XPath: variables are not supported (position 0)');
    assert.equal(check('xpath', "'a'/b"), 'XPath: a path cannot apply to a string (position 0)');
    assert.equal(check('xpath', 'div span'), "XPath: unexpected name 'span' at position 4 (expected an operator)");
    assert.equal(check('xpath', `${'('.repeat(100)}1${')'.repeat(100)}`), 'XPath: expression is nested too deeply');
  });

  test('CSS messages', () => {
    assert.equal(check('css', 'div >> p'), 'CSS: Did not expect successive traversals.');
    assert.equal(check('css', 'a['), 'CSS: Expected name, found ');
    assert.equal(check('css', 'li +'), 'CSS: selector ends with a combinator');
    assert.equal(check('css', "//span[@class='x']"), 'CSS: Empty sub-selector');
    assert.match(check('css', 'a:bogus-pseudo')!, /^CSS: .*bogus-pseudo/);
    assert.equal(check('css', '/x/gg'), "CSS: invalid element name '/x'");
  });

  test('JSONPath messages', () => {
    assert.equal(check('jsonpath', '$.store[book'), "JSONPath: unexpected token 'b' in bracketed selection at position 8");
    assert.equal(check('jsonpath', 'store.book'), "JSONPath: expected '$', found 's' at position 0");
    assert.equal(check('jsonpath', '$..'), 'JSONPath: bald descendant segment at position 3');
    assert.match(check('jsonpath', '$[?(@.price < )]')!, /^JSONPath: unexpected '\)' at position 14$/);
  });

  test('Regex messages', () => {
    assert.equal(check('regex', 'price: (\\d+'), 'Regex: Invalid regular expression: /price: (\\d+/: Unterminated group');
    assert.equal(check('regex', '/x/gg'), "Regex: Invalid flags supplied to RegExp constructor 'gg'");
    assert.equal(check('regex', '//'), null, 'two slashes with nothing between are a plain pattern');
  });

  test('empty, too long and unknown-type selectors', () => {
    assert.equal(check('css', '   '), 'selector must not be empty');
    assert.equal(check('xpath', `//a${'/b'.repeat(MAX_SELECTOR_LENGTH)}`), `selector is too long (at most ${MAX_SELECTOR_LENGTH} characters)`);
    assert.equal(check('html' as ExtractorType, 'p'), "unknown extractor type 'html' (expected css, xpath, jsonpath or regex)");
  });
});

describe('extractAll', () => {
  test('runs every extractor in order, parsing HTML and JSON only when needed', () => {
    const regexOnly = extractAll(PRODUCT, 'text/html', [{ type: 'regex', selector: 'ATR3-M-\\d+', name: 'sku' }]);
    assert.equal(regexOnly.parseMs, 0);
    assert.deepEqual(regexOnly.values, [{ name: 'sku', value: 'ATR3-M-42', warning: null }]);

    const mixed = extractAll(PRODUCT, 'text/html', [
      { type: 'css', selector: 'h1', name: 'title' },
      { type: 'regex', selector: 'DATA-PRICE="([\\d.]+)"', name: 'price' },
      { type: 'xpath', selector: 'count(//li)', name: 'items' },
      { type: 'jsonpath', selector: '$.x', name: 'json' },
    ]);
    assert.deepEqual(mixed.values.map((v) => [v.name, v.value]), [['title', 'Acme Trail Runner 3'], ['price', '129.99'], ['items', 7], ['json', null]]);
    assert.ok(mixed.parseMs > 0);
    assert.ok(mixed.extractMs >= 0);
  });

  test('never throws: invalid selectors and unknown types become warnings next to good values', () => {
    const { values } = extractAll(PRODUCT, undefined, [
      { type: 'xpath', selector: '//span[', name: 'bad_xpath' },
      { type: 'css', selector: 'div >> p', name: 'bad_css' },
      { type: 'regex', selector: '(', name: 'bad_regex' },
      { type: 'bogus' as ExtractorType, selector: 'x', name: 'bad_type' },
      { type: 'css', selector: '.price-current', name: 'good', attribute: 'data-price' },
    ]);
    assert.deepEqual(values.map((v) => v.value), [null, null, null, null, '129.99']);
    assert.match(values[0]!.warning!, /^XPath: unexpected end of expression/);
    assert.match(values[1]!.warning!, /^CSS: /);
    assert.match(values[2]!.warning!, /^Regex: /);
    assert.match(values[3]!.warning!, /unknown extractor type/);
  });

  test('an empty or broken body is not an error', () => {
    assert.equal(one('', { type: 'css', selector: 'h1' }).value, null);
    assert.equal(one('<div><span>unclosed', { type: 'xpath', selector: '//span' }).value, 'unclosed');
    assert.equal(one('<<<>>>&&&', { type: 'xpath', selector: 'string(/)' }).value, '<<<>>>&&&');
  });

  test('deeply nested markup does not exhaust the stack', () => {
    const deep = `${'<div>'.repeat(20_000)}<span class=x>deep</span>`;
    assert.equal(value(deep, 'css', 'span.x'), 'deep');
    assert.equal(value(deep, 'xpath', "//span[@class='x']/ancestor::div[1]/span"), 'deep');
    assert.equal(value(deep, 'xpath', "count(//span[@class='x']/ancestor::div)"), 20_000);
    assert.equal(value(deep, 'xpath', "//span[@class='x']"), 'deep');
    assert.equal(value(deep, 'xpath', 'count(//div)'), 20_000);
    assert.equal(value(deep, 'css', 'body, div'), 'deep');
  });
});

describe('decodeBody', () => {
  test('windows-1251 page: charset from <meta charset>', () => {
    const html = decodeBody(fixture('windows-1251.html'), 'text/html');
    assert.equal(value(html, 'css', 'h1'), 'Кроссовки для бега по пересечённой местности');
    assert.equal(value(html, 'css', '.price'), '10 990 руб.');
    assert.deepEqual(value(html, 'xpath', "//ul[@class='sizes']/li", { multiple: true }), ['Размер 41', 'Размер 42', 'Размер 43']);
  });

  test('Shift_JIS page: charset from <meta http-equiv="Content-Type">', () => {
    const html = decodeBody(fixture('shift_jis.html'), undefined);
    assert.equal(value(html, 'css', 'h1'), 'トレイルランニングシューズ（メンズ）');
    assert.equal(value(html, 'xpath', "//span[@id='price']"), '12,980円');
    assert.equal(value(html, 'regex', '在庫(\\S+)<'), 'あり');
  });

  test('the Content-Type header wins over <meta>', () => {
    const bytes = Buffer.concat([Buffer.from('<meta charset="utf-8"><p>caf'), Buffer.from([0xe9]), Buffer.from('</p>')]);
    assert.equal(value(decodeBody(bytes, 'text/html; charset=ISO-8859-1'), 'css', 'p'), 'café');
    assert.equal(value(decodeBody(bytes, 'text/html;charset="latin1"'), 'css', 'p'), 'café');
    assert.equal(value(decodeBody(bytes, 'text/html'), 'css', 'p'), 'caf\ufffd', 'undecodable bytes become U+FFFD');
  });

  test('an unknown charset label falls through to the next source', () => {
    const bytes = Buffer.concat([Buffer.from('<meta charset="windows-1251"><p>'), Buffer.from([0xcf, 0xf0, 0xe8, 0xe2, 0xe5, 0xf2]), Buffer.from('</p>')]);
    assert.equal(value(decodeBody(bytes, 'text/html; charset=x-no-such-charset'), 'css', 'p'), 'Привет');
  });

  test('other legacy encodings by header', () => {
    const cases: [string, number[], string][] = [
      ['gbk', [0xd6, 0xd0, 0xce, 0xc4], '中文'],
      ['gb2312', [0xd6, 0xd0, 0xce, 0xc4], '中文'],
      ['big5', [0xa4, 0xa4, 0xa4, 0xe5], '中文'],
      ['euc-jp', [0xc6, 0xfc, 0xcb, 0xdc], '日本'],
      ['koi8-r', [0xd0, 0xd2, 0xc9, 0xd7, 0xc5, 0xd4], 'привет'],
      ['windows-1251', [0xcf, 0xf0, 0xe8, 0xe2, 0xe5, 0xf2], 'Привет'],
      ['shift_jis', [0x93, 0xfa, 0x96, 0x7b], '日本'],
      ['windows-1252', [0x80, 0x20, 0x39], '€ 9'],
      ['iso-8859-1', [0x80, 0x20, 0x39], '€ 9'],
      ['utf-8', [0xe2, 0x82, 0xac], '€'],
    ];
    for (const [charset, bytes, text] of cases) {
      assert.equal(decodeBody(Buffer.from(bytes), `text/html; charset=${charset}`), text, charset);
    }
  });

  test('byte order marks: UTF-8 and UTF-16 (LE/BE), stripped from the text', () => {
    assert.equal(decodeBody(Buffer.from([0xef, 0xbb, 0xbf, ...Buffer.from('<p>ok</p>')]), undefined), '<p>ok</p>');
    const le = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('<p>żółw</p>', 'utf16le')]);
    assert.equal(decodeBody(le, undefined), '<p>żółw</p>');
    const be = Buffer.from(le);
    be.swap16();
    assert.equal(decodeBody(be, 'text/html'), '<p>żółw</p>');
    // The BOM is the author's unmistakable statement; browsers let it win over the header.
    assert.equal(decodeBody(le, 'text/html; charset=iso-8859-1'), '<p>żółw</p>');
  });

  test('XML declaration encoding, and meta claiming UTF-16 on an ASCII-readable page means UTF-8', () => {
    const xml = Buffer.concat([Buffer.from('<?xml version="1.0" encoding="windows-1251"?><t>'), Buffer.from([0xe4, 0xe0]), Buffer.from('</t>')]);
    assert.equal(decodeBody(xml, 'application/xml'), '<?xml version="1.0" encoding="windows-1251"?><t>да</t>');
    const claims16 = Buffer.from('<meta charset="utf-16"><p>€</p>');
    assert.equal(decodeBody(claims16, undefined), '<meta charset="utf-16"><p>€</p>');
  });

  test('no declaration: UTF-8', () => {
    assert.equal(decodeBody(Buffer.from('<p>Grüße €</p>'), undefined), '<p>Grüße €</p>');
    assert.equal(decodeBody(Buffer.from('{"a":"ü"}'), 'application/json'), '{"a":"ü"}');
  });

  test('a meta declaration past the first 2 KB is ignored', () => {
    const bytes = Buffer.concat([Buffer.from(`<!-- ${'x'.repeat(2100)} --><meta charset="windows-1251"><p>`), Buffer.from('ü', 'utf8'), Buffer.from('</p>')]);
    assert.match(decodeBody(bytes, undefined), /<p>ü<\/p>$/);
  });
});
