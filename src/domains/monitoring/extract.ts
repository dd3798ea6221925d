/**
 * Value extraction for monitored pages: turns a fetched body into named values with CSS selectors,
 * XPath 1.0 expressions, JSONPath queries or regular expressions. Pure functions, no I/O.
 *
 * HTML is parsed once per body with htmlparser2 (forgiving, real-world HTML is not XML) into a
 * domhandler tree; CSS runs on it through css-select, and XPath 1.0 is evaluated over the same tree
 * by the small engine in this file (no second DOM). JSON is parsed once and queried with json-p3
 * (RFC 9535 JSONPath; its filter language is parsed, never evaluated as JavaScript).
 *
 * Values are returned as found: numbers stay strings for css/xpath/regex (the caller compares
 * values as given). A selector that matches nothing yields `null` plus a warning; nothing in
 * `extractAll` throws for a bad page or a no-match.
 */
import { compile as compileCssQuery, selectAll, selectOne } from 'css-select';
import { parse as parseCss, type Selector as CssSelector } from 'css-what';
import {
  hasChildren,
  isCDATA,
  isComment,
  isDirective,
  isDocument,
  isTag,
  isText,
  DomHandler,
  Element as DomElement,
  type AnyNode,
  type Document,
  type Element,
} from 'domhandler';
import { appendChild, prepend } from 'domutils';
import { Parser } from 'htmlparser2';
import { jsonpath, JSONPathError, type JSONPathQuery, type JSONValue } from 'json-p3';

export type ExtractorType = 'css' | 'xpath' | 'jsonpath' | 'regex';

export interface ExtractorSpec {
  type: ExtractorType;
  selector: string;
  name: string;
  /** css/xpath: read this attribute of the matched elements instead of their text. */
  attribute?: string;
  /** All matches as an array instead of the first one. */
  multiple?: boolean;
}

export interface ExtractedValue {
  name: string;
  value: string | number | boolean | null | (string | number | boolean | null)[] | unknown;
  /** Why `value` is null (no match, body not JSON, runtime error), or a note such as truncated input. */
  warning: string | null;
}

/** Regexes run on at most this many characters of the body: a bound on the cost of backtracking. */
export const REGEX_MAX_INPUT_CHARS = 1_000_000;
/** `multiple: true` returns at most this many values (a page of 10,000 rows is already unusual). */
export const MAX_VALUES_PER_EXTRACTOR = 10_000;
/** Longer selectors are rejected by validateSelector (and the evaluation cost stays bounded). */
export const MAX_SELECTOR_LENGTH = 4_096;

/** An error message (prefixed with the language, e.g. "XPath: ...") for an invalid selector, or null when it is valid. */
export function validateSelector(spec: ExtractorSpec): string | null {
  const selector = spec.selector;
  if (typeof selector !== 'string' || selector.trim() === '') return 'selector must not be empty';
  if (selector.length > MAX_SELECTOR_LENGTH) return `selector is too long (at most ${MAX_SELECTOR_LENGTH} characters)`;
  try {
    switch (spec.type) {
      case 'css':
        return checkCssSelector(selector);
      case 'xpath':
        compileXPath(selector);
        return null;
      case 'jsonpath':
        compileJsonPath(selector);
        return null;
      case 'regex':
        compileRegex(selector, false);
        return null;
      default:
        return `unknown extractor type '${String(spec.type)}' (expected css, xpath, jsonpath or regex)`;
    }
  } catch (err) {
    return selectorErrorMessage(spec.type, err);
  }
}

/**
 * Runs every extractor over one body. The HTML tree is built once and only if a css/xpath
 * extractor needs it; the JSON value likewise. Times are wall-clock milliseconds: `parseMs` for
 * building the tree / parsing JSON, `extractMs` for running the extractors.
 */
export function extractAll(
  body: string,
  contentType: string | undefined,
  specs: ExtractorSpec[],
): { values: ExtractedValue[]; parseMs: number; extractMs: number } {
  const started = performance.now();
  let parseMs = 0;
  let html: HtmlTree | undefined;
  let json: { ok: true; value: JSONValue } | { ok: false; error: string } | undefined;

  const tree = (): HtmlTree => {
    if (!html) {
      const t = performance.now();
      html = parseHtml(body, isXmlContentType(contentType));
      parseMs += performance.now() - t;
    }
    return html;
  };
  const jsonValue = (): NonNullable<typeof json> => {
    if (!json) {
      const t = performance.now();
      try {
        // decodeBody strips a BOM, but bodies may come from elsewhere.
        json = { ok: true, value: JSON.parse(body.charCodeAt(0) === 0xfeff ? body.slice(1) : body) as JSONValue };
      } catch (err) {
        json = { ok: false, error: `body is not valid JSON (${(err as Error).message})` };
      }
      parseMs += performance.now() - t;
    }
    return json;
  };

  const values = specs.map((spec): ExtractedValue => {
    try {
      switch (spec.type) {
        case 'css':
          return extractCss(tree(), spec);
        case 'xpath':
          return extractXPath(tree(), spec);
        case 'jsonpath': {
          const parsed = jsonValue();
          return parsed.ok ? extractJsonPath(parsed.value, spec) : miss(spec, `JSONPath: ${parsed.error}`);
        }
        case 'regex':
          return extractRegex(body, spec);
        default:
          return miss(spec, `unknown extractor type '${String(spec.type)}'`);
      }
    } catch (err) {
      // Invalid selectors that were not validated, XPath type errors, stack exhaustion on absurd input...
      return miss(spec, selectorErrorMessage(spec.type, err));
    }
  });
  const total = performance.now() - started;
  return { values, parseMs, extractMs: Math.max(0, total - parseMs) };
}

function miss(spec: ExtractorSpec, warning: string): ExtractedValue {
  return { name: spec.name, value: null, warning };
}

/** Shapes a node list into the extractor's value: first or all (capped), null + warning when empty. */
function fromList<T>(spec: ExtractorSpec, items: T[], noMatch: string): ExtractedValue {
  if (items.length === 0) return miss(spec, noMatch);
  if (!spec.multiple) return { name: spec.name, value: items[0], warning: null };
  if (items.length > MAX_VALUES_PER_EXTRACTOR) {
    return {
      name: spec.name,
      value: items.slice(0, MAX_VALUES_PER_EXTRACTOR),
      warning: `${items.length} matches; only the first ${MAX_VALUES_PER_EXTRACTOR} are returned`,
    };
  }
  return { name: spec.name, value: items, warning: null };
}

function selectorErrorMessage(type: ExtractorType, err: unknown): string {
  if (err instanceof XPathError) return `XPath: ${err.message}`;
  if (err instanceof JSONPathError) return `JSONPath: ${jsonPathErrorText(err)} at position ${err.token.index}`;
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof RangeError && /call stack/i.test(message)) return `${LANGUAGE[type] ?? type}: selector or document is nested too deeply`;
  return `${LANGUAGE[type] ?? type}: ${message}`;
}

/** json-p3 appends " ('<up to 9 characters around the error>':<index>)"; drop it, the position is reported separately. */
function jsonPathErrorText(err: JSONPathError): string {
  const { input, index } = err.token;
  const around =
    input.length <= 9 ? input
    : index > input.length - 5 ? input.slice(input.length - 9)
    : index - 4 < 0 ? input.slice(0, 9)
    : input.slice(index - 4, index + 5);
  const suffix = ` ('${around}':${index})`;
  return err.message.endsWith(suffix) ? err.message.slice(0, -suffix.length) : err.message;
}

const LANGUAGE: Record<string, string> = { css: 'CSS', xpath: 'XPath', jsonpath: 'JSONPath', regex: 'Regex' };

// ---------------------------------------------------------------------------------------------
// HTML tree and text

interface HtmlTree {
  doc: Document;
  /** XML content types are parsed in XML mode: names keep their case and are matched exactly. */
  xml: boolean;
  /**
   * Elements by name in document order, recorded while the parser opens them: `//name` paths and CSS
   * selectors ending in a tag name test only those elements instead of walking the whole tree.
   */
  byName: Map<string, Element[]>;
}

function elementsNamed(tree: HtmlTree, name: string): Element[] {
  return tree.byName.get(name) ?? [];
}

/** DomHandler that also indexes every element by name as it opens (so in document order). */
class IndexingDomHandler extends DomHandler {
  readonly byName = new Map<string, Element[]>();

  override onopentag(name: string, attribs: Record<string, string>): void {
    super.onopentag(name, attribs);
    const el = this.tagStack[this.tagStack.length - 1] as Element;
    const list = this.byName.get(el.name);
    if (list) list.push(el);
    else this.byName.set(el.name, [el]);
  }
}

function isXmlContentType(contentType: string | undefined): boolean {
  if (!contentType) return false;
  const mime = contentType.split(';')[0]!.trim().toLowerCase();
  // XHTML is served as XML but written like HTML (and usually only renders as HTML): keep HTML rules.
  return (mime.endsWith('/xml') || mime.endsWith('+xml')) && mime !== 'application/xhtml+xml';
}

function parseHtml(body: string, xml: boolean): HtmlTree {
  // Start indices (source offsets) double as document-order keys for XPath node-sets.
  const options = { xmlMode: xml, withStartIndices: true };
  const handler = new IndexingDomHandler(undefined, options);
  new Parser(handler, options).end(body);
  const tree: HtmlTree = { doc: handler.root, xml, byName: handler.byName };
  if (!xml) insertImplicitTbody(tree);
  return tree;
}

/**
 * Browsers put table rows that are direct children of `<table>` into an implied `<tbody>`, and
 * selectors are written against the browser's tree (devtools' "Copy XPath" yields
 * `.../table/tbody/tr[2]/td`). htmlparser2 does not, so the same wrapping is done here: each run of
 * `<tr>` children (with the whitespace and comments between them) moves into a new `<tbody>`.
 */
function insertImplicitTbody(tree: HtmlTree): void {
  const tables = tree.byName.get('table');
  if (!tables) return;
  const added: Element[] = [];
  for (const table of tables) {
    const children = table.children;
    if (!children.some((c) => isTag(c) && c.name === 'tr')) continue;
    let i = 0;
    while (i < children.length) {
      const c = children[i]!;
      if (!(isTag(c) && c.name === 'tr')) {
        i++;
        continue;
      }
      // The run: this row up to the last row before a non-row element (or the end).
      let end = i;
      for (let j = i + 1; j < children.length; j++) {
        const d = children[j]!;
        if (isTag(d) && d.name === 'tr') end = j;
        else if (isTag(d)) break;
      }
      const run = children.slice(i, end + 1);
      const tbody = new DomElement('tbody', {});
      tbody.startIndex = (c.startIndex ?? 0) - 0.5; // keeps source offsets usable as document order
      prepend(c, tbody);
      for (const node of run) appendChild(tbody, node);
      added.push(tbody);
      i = children.indexOf(tbody) + 1;
    }
  }
  if (added.length) {
    // The name index stays in document order with the new elements in it.
    const all = [...(tree.byName.get('tbody') ?? []), ...added];
    all.sort((a, b) => (a.startIndex ?? 0) - (b.startIndex ?? 0));
    tree.byName.set('tbody', all);
  }
}

/** Elements whose text is never part of a value (unless the element itself was selected). */
const TEXTLESS = new Set(['script', 'style']);

/**
 * Elements that separate words when a page is read: `<td>1</td><td>2</td>` reads "1 2", while
 * inline markup such as `<b>$</b>29` reads "$29".
 */
const BLOCK = new Set([
  'address', 'article', 'aside', 'blockquote', 'br', 'caption', 'dd', 'details', 'dialog', 'div', 'dl', 'dt',
  'fieldset', 'figcaption', 'figure', 'footer', 'form', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'header', 'hr', 'li',
  'main', 'nav', 'ol', 'option', 'p', 'pre', 'section', 'summary', 'table', 'tbody', 'td', 'tfoot', 'th', 'thead',
  'tr', 'ul',
]);

/** Collapses runs of whitespace (including no-break spaces) to one space and trims. */
function normalizeWhitespace(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/**
 * The readable text of a node: its text descendants, script/style content excluded (unless `root`
 * itself is one), block boundaries read as spaces, whitespace normalized. Iterative, so a page of
 * 100,000 nested unclosed tags cannot exhaust the stack.
 */
function readableText(root: AnyNode): string {
  if (isText(root) || isComment(root)) return normalizeWhitespace(root.data);
  const parts: string[] = [];
  let node: AnyNode | null = root;
  while (node) {
    let descend = false;
    if (isText(node)) parts.push(node.data);
    else if (isTag(node)) {
      if (node === root || !TEXTLESS.has(node.name)) {
        if (BLOCK.has(node.name)) parts.push(' ');
        descend = true;
      }
    } else if (isCDATA(node) || isDocument(node)) descend = true;

    if (descend && hasChildren(node) && node.children.length > 0) {
      node = node.children[0]!;
      continue;
    }
    // Leave this node (and any ancestors that have no next sibling) until the next node to visit.
    while (node) {
      if (node !== root && isTag(node) && BLOCK.has(node.name)) parts.push(' ');
      if (node === root) {
        node = null;
        break;
      }
      if (node.next) {
        node = node.next;
        break;
      }
      node = node.parent;
    }
  }
  return normalizeWhitespace(parts.join(''));
}

// ---------------------------------------------------------------------------------------------
// CSS

const CSS_HTML_OPTIONS = { xmlMode: false };
const CSS_XML_OPTIONS = { xmlMode: true };

/**
 * css-select compiles the selector (unknown pseudo-classes, bad syntax); css-what alone is lenient
 * about element names and a trailing combinator, so those are checked on its parse tree.
 */
function checkCssSelector(selector: string): string | null {
  compileCssQuery(selector, CSS_HTML_OPTIONS);
  return checkCssGroups(parseCss(selector));
}

const COMBINATORS = new Set(['adjacent', 'child', 'column-combinator', 'descendant', 'parent', 'sibling']);
const CSS_ELEMENT_NAME = /^-?(?:[A-Za-z_\u00A0-\uFFFF]|\\.)(?:[\w\u00A0-\uFFFF-]|\\.)*$/;

function checkCssGroups(groups: CssSelector[][]): string | null {
  for (const group of groups) {
    const last = group[group.length - 1];
    if (last && COMBINATORS.has(last.type)) return 'CSS: selector ends with a combinator';
    for (const token of group) {
      if (token.type === 'tag' && !CSS_ELEMENT_NAME.test(token.name)) return `CSS: invalid element name '${token.name}'`;
      if (token.type === 'pseudo' && Array.isArray(token.data)) {
        const inner = checkCssGroups(token.data);
        if (inner) return inner;
      }
    }
  }
  return null;
}

interface CompiledCss {
  query: ReturnType<typeof compileCssQuery<AnyNode, Element>>;
  /**
   * The tag name every match must have (`a` in `.card .title a`), or null when there is none to rely
   * on (a comma group, a universal or namespaced last compound).
   */
  tag: string | null;
}

const cssCache = new Map<string, CompiledCss>();

/** css-select compiles a selector on every call; monitors run the same ones again and again. */
function compileCss(selector: string, xml: boolean): CompiledCss {
  return cached(cssCache, `${xml ? 'x' : 'h'}\u0000${selector}`, () => ({
    query: compileCssQuery<AnyNode, Element>(selector, xml ? CSS_XML_OPTIONS : CSS_HTML_OPTIONS),
    tag: rightmostTag(parseCss(selector), xml),
  }));
}

function rightmostTag(groups: CssSelector[][], xml: boolean): string | null {
  if (groups.length !== 1) return null;
  const tokens = groups[0]!;
  for (let i = tokens.length - 1; i >= 0; i--) {
    const t = tokens[i]!;
    if (COMBINATORS.has(t.type)) return null;
    if (t.type === 'tag') return t.namespace ? null : xml ? t.name : t.name.toLowerCase();
  }
  return null;
}

function extractCss(tree: HtmlTree, spec: ExtractorSpec): ExtractedValue {
  const options = tree.xml ? CSS_XML_OPTIONS : CSS_HTML_OPTIONS;
  const { query, tag } = compileCss(spec.selector, tree.xml);
  const noMatch = `no element matches CSS selector '${spec.selector}'`;
  if (!spec.multiple) {
    // The first match stops the walk; only when it lacks the attribute are the others needed.
    const el = selectOne<AnyNode, Element>(query, tree.doc, options);
    if (!el) return miss(spec, noMatch);
    if (spec.attribute === undefined) return { name: spec.name, value: readableText(el), warning: null };
    const attr = tree.xml ? spec.attribute : spec.attribute.toLowerCase();
    if (Object.hasOwn(el.attribs, attr)) return { name: spec.name, value: el.attribs[attr]!, warning: null };
  }
  // Only elements of the selector's last tag can match it: test those (already in document order).
  const elements = tag === null ? selectAll<AnyNode, Element>(query, tree.doc, options) : elementsNamed(tree, tag).filter(query);
  return elementValues(spec, elements, tree.xml, noMatch);
}

/** Text (or the spec's attribute) of each element; elements without the attribute are skipped. */
function elementValues(spec: ExtractorSpec, elements: Element[], xml: boolean, noMatch: string): ExtractedValue {
  if (spec.attribute === undefined) return fromList(spec, elements.map(readableText), noMatch);
  const attr = xml ? spec.attribute : spec.attribute.toLowerCase();
  const values: string[] = [];
  for (const el of elements) {
    if (Object.hasOwn(el.attribs, attr)) values.push(el.attribs[attr]!);
  }
  if (values.length === 0 && elements.length > 0) {
    return miss(spec, `${elements.length} element(s) match but none has the attribute '${spec.attribute}'`);
  }
  return fromList(spec, values, noMatch);
}

// ---------------------------------------------------------------------------------------------
// JSONPath

const jsonPathCache = new Map<string, JSONPathQuery>();

function compileJsonPath(selector: string): JSONPathQuery {
  return cached(jsonPathCache, selector, () => jsonpath.compile(selector));
}

function extractJsonPath(value: JSONValue, spec: ExtractorSpec): ExtractedValue {
  const query = compileJsonPath(spec.selector);
  const noMatch = `JSONPath '${spec.selector}' matches nothing`;
  if (!spec.multiple) {
    const node = query.match(value);
    return node ? { name: spec.name, value: node.value, warning: null } : miss(spec, noMatch);
  }
  return fromList(spec, query.query(value).values(), noMatch);
}

// ---------------------------------------------------------------------------------------------
// Regex

const regexCache = new Map<string, RegExp>();

/**
 * `/pattern/flags` honours the flags; anything else is the pattern itself (so `/usr/bin`, whose
 * "flags" are not flags, is a plain pattern). `global` adds the g flag for matchAll.
 */
function compileRegex(selector: string, global: boolean): RegExp {
  return cached(regexCache, `${global ? 'g' : '-'}${selector}`, () => {
    let pattern = selector;
    let flags = '';
    const literal = /^\/([\s\S]+)\/([a-z]*)$/.exec(selector);
    if (literal && /^[dgimsuvy]*$/.test(literal[2]!)) {
      pattern = literal[1]!;
      flags = literal[2]!;
    }
    if (pattern === '') throw new Error('pattern is empty');
    new RegExp(pattern, flags); // reports bad flags (duplicates, u with v) as written
    flags = flags.replace('g', '');
    return new RegExp(pattern, global ? `${flags}g` : flags);
  });
}

function extractRegex(body: string, spec: ExtractorSpec): ExtractedValue {
  // Cap the input: backtracking cost grows with input length (catastrophic patterns still cost
  // time on short input; run extraction where a stuck job can be timed out).
  const truncated = body.length > REGEX_MAX_INPUT_CHARS;
  const input = truncated ? body.slice(0, REGEX_MAX_INPUT_CHARS) : body;
  const note = truncated ? `regex ran on the first ${REGEX_MAX_INPUT_CHARS} of ${body.length} characters` : null;
  const noMatch = `regex '${spec.selector}' matches nothing`;
  const pick = (m: RegExpExecArray): string | null => (m.length > 1 ? (m[1] ?? null) : m[0]);

  let result: ExtractedValue;
  if (!spec.multiple) {
    const re = compileRegex(spec.selector, false);
    re.lastIndex = 0; // sticky (y) patterns keep state between calls
    const m = re.exec(input);
    result = m ? { name: spec.name, value: pick(m), warning: null } : miss(spec, noMatch);
  } else {
    const values: (string | null)[] = [];
    let count = 0;
    for (const m of input.matchAll(compileRegex(spec.selector, true))) {
      // Stop collecting past the cap, but keep counting so the warning tells the real number.
      if (++count <= MAX_VALUES_PER_EXTRACTOR) values.push(pick(m));
      else if (count > MAX_VALUES_PER_EXTRACTOR * 10) break;
    }
    result = fromList(spec, values, noMatch);
    if (count > MAX_VALUES_PER_EXTRACTOR) result.warning = `more than ${MAX_VALUES_PER_EXTRACTOR} matches; only the first ${MAX_VALUES_PER_EXTRACTOR} are returned`;
  }
  if (note) result.warning = result.warning ? `${result.warning}; ${note}` : note;
  return result;
}

/** A small bounded memo for compiled selectors: monitors run the same selectors again and again. */
function cached<T>(cache: Map<string, T>, key: string, build: () => T): T {
  let hit = cache.get(key);
  if (hit === undefined) {
    hit = build();
    if (cache.size >= 500) cache.delete(cache.keys().next().value!);
    cache.set(key, hit);
  }
  return hit;
}

// ---------------------------------------------------------------------------------------------
// XPath 1.0 over the domhandler tree
//
// A tokenizer, a recursive-descent parser to a small AST, and an evaluator, following the XPath 1.0
// recommendation (https://www.w3.org/TR/xpath-10/). Differences, all deliberate:
// - HTML element and attribute names match case-insensitively (htmlparser2 lowercases them); XML
//   bodies match exactly. Namespaces are not modelled: `svg:rect` matches an element named so.
// - The string-value of an element leaves out the text of script/style descendants, as extracted
//   text does; a script/style element itself keeps its text (`//script[contains(., 'sku')]`).
// - Variables and the namespace axis are not supported; `ends-with`, `lower-case` and
//   `upper-case` (XPath 2.0) are added because monitors often need them.
// - Doctype and the XML declaration are not nodes.

class XPathError extends Error {}

/**
 * An attribute as an XPath node (domhandler keeps attributes in a plain object). Made on demand;
 * identity does not matter, document order and de-duplication go by owner and name.
 */
class AttributeNode {
  readonly owner: Element;
  readonly name: string;
  readonly value: string;
  constructor(owner: Element, name: string, value: string) {
    this.owner = owner;
    this.name = name;
    this.value = value;
  }
}

type XNode = AnyNode | AttributeNode;
type XValue = XNode[] | string | number | boolean;

type Axis =
  | 'ancestor' | 'ancestor-or-self' | 'attribute' | 'child' | 'descendant' | 'descendant-or-self' | 'following'
  | 'following-sibling' | 'parent' | 'preceding' | 'preceding-sibling' | 'self';

const AXES = new Set<string>([
  'ancestor', 'ancestor-or-self', 'attribute', 'child', 'descendant', 'descendant-or-self', 'following',
  'following-sibling', 'parent', 'preceding', 'preceding-sibling', 'self',
]);
const REVERSE_AXES = new Set<Axis>(['ancestor', 'ancestor-or-self', 'preceding', 'preceding-sibling']);

type NodeTest =
  | { kind: 'name'; name: string; lower: string }
  | { kind: 'any' }
  | { kind: 'prefix'; prefix: string; lower: string }
  | { kind: 'text' | 'comment' | 'node' }
  | { kind: 'pi'; target: string | null };

interface Step {
  axis: Axis;
  test: NodeTest;
  predicates: Expr[];
}

type Expr =
  | { kind: 'literal'; value: string }
  | { kind: 'number'; value: number }
  | { kind: 'call'; name: string; args: Expr[] }
  | { kind: 'binary'; op: string; left: Expr; right: Expr }
  | { kind: 'negate'; operand: Expr }
  | { kind: 'union'; left: Expr; right: Expr }
  | { kind: 'filter'; primary: Expr; predicates: Expr[] }
  | { kind: 'path'; absolute: boolean; start: Expr | null; steps: Step[] };

// ---- tokenizer

interface Token {
  /** num, str, name (NCName / QName / prefix:*), nodetype, func, axis, op (operators and punctuation), eof */
  type: 'num' | 'str' | 'name' | 'nodetype' | 'func' | 'axis' | 'op' | 'eof';
  value: string;
  pos: number;
}

const NODE_TYPES = new Set(['comment', 'text', 'processing-instruction', 'node']);
const NAME_START = /[A-Za-z_\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u02FF\u0370-\u037D\u037F-\u1FFF\u200C-\u200D\u2070-\u218F\u2C00-\u2FEF\u3001-\uD7FF\uF900-\uFDCF\uFDF0-\uFFFD]/;
const NAME_CHAR = /[-.0-9\u00B7\u0300-\u036F\u203F-\u2040A-Za-z_\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u02FF\u0370-\u037D\u037F-\u1FFF\u200C-\u200D\u2070-\u218F\u2C00-\u2FEF\u3001-\uD7FF\uF900-\uFDCF\uFDF0-\uFFFD]/;

function tokenize(src: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  // XPath 1.0 §3.7: after a token that can end an operand, `*` is multiplication and an NCName is
  // an operator name (and, or, mod, div).
  const operandEnded = (): boolean => {
    const prev = tokens[tokens.length - 1];
    if (!prev) return false;
    if (prev.type === 'op') return prev.value === ')' || prev.value === ']' || prev.value === '.' || prev.value === '..';
    return prev.type === 'num' || prev.type === 'str' || prev.type === 'name' || prev.type === 'nodetype';
  };
  const peekNonSpace = (from: number): number => {
    while (from < src.length && ' \t\r\n'.includes(src[from]!)) from++;
    return from;
  };
  while (i < src.length) {
    const c = src[i]!;
    const start = i;
    if (' \t\r\n'.includes(c)) {
      i++;
      continue;
    }
    if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(src[i + 1] ?? ''))) {
      const m = /^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)/.exec(src.slice(i))!;
      tokens.push({ type: 'num', value: m[0], pos: start });
      i += m[0].length;
      continue;
    }
    if (c === '"' || c === "'") {
      const end = src.indexOf(c, i + 1);
      if (end < 0) throw new XPathError(`unterminated string literal starting at position ${start}`);
      tokens.push({ type: 'str', value: src.slice(i + 1, end), pos: start });
      i = end + 1;
      continue;
    }
    const two = src.slice(i, i + 2);
    if (two === '//' || two === '::' || two === '..' || two === '!=' || two === '<=' || two === '>=') {
      tokens.push({ type: 'op', value: two, pos: start });
      i += 2;
      continue;
    }
    if (c === '*') {
      tokens.push({ type: operandEnded() ? 'op' : 'name', value: '*', pos: start });
      i++;
      continue;
    }
    if ('/|+-=<>()[],@.'.includes(c)) {
      tokens.push({ type: 'op', value: c, pos: start });
      i++;
      continue;
    }
    if (c === '$') throw new XPathError(`variables are not supported (position ${start})`);
    if (NAME_START.test(c)) {
      i++;
      while (i < src.length && NAME_CHAR.test(src[i]!)) i++;
      let name = src.slice(start, i);
      if (operandEnded()) {
        if (name === 'and' || name === 'or' || name === 'mod' || name === 'div') {
          tokens.push({ type: 'op', value: name, pos: start });
          continue;
        }
        throw new XPathError(`unexpected name '${name}' at position ${start} (expected an operator)`);
      }
      // QName (prefix:local) or prefix:* — but not the axis separator `::`.
      if (src[i] === ':' && src[i + 1] !== ':') {
        if (src[i + 1] === '*') {
          tokens.push({ type: 'name', value: `${name}:*`, pos: start });
          i += 2;
          continue;
        }
        if (NAME_START.test(src[i + 1] ?? '')) {
          i += 2;
          while (i < src.length && NAME_CHAR.test(src[i]!)) i++;
          name = src.slice(start, i);
        }
      }
      const after = peekNonSpace(i);
      if (src.startsWith('::', after)) {
        if (name === 'namespace') throw new XPathError(`the namespace axis is not supported (position ${start})`);
        if (!AXES.has(name)) throw new XPathError(`unknown axis '${name}' at position ${start}`);
        tokens.push({ type: 'axis', value: name, pos: start });
      } else if (src[after] === '(') {
        tokens.push({ type: NODE_TYPES.has(name) ? 'nodetype' : 'func', value: name, pos: start });
      } else {
        tokens.push({ type: 'name', value: name, pos: start });
      }
      continue;
    }
    throw new XPathError(`unexpected character '${c}' at position ${start}`);
  }
  tokens.push({ type: 'eof', value: '', pos: src.length });
  return tokens;
}

// ---- parser

/** Return type of each function, and its argument count range (max -1 = unbounded). */
const FUNCTIONS = new Map<string, { returns: StaticType; min: number; max: number }>(Object.entries({
  last: { returns: 'number', min: 0, max: 0 },
  position: { returns: 'number', min: 0, max: 0 },
  count: { returns: 'number', min: 1, max: 1 },
  id: { returns: 'nodeset', min: 1, max: 1 },
  'local-name': { returns: 'string', min: 0, max: 1 },
  'namespace-uri': { returns: 'string', min: 0, max: 1 },
  name: { returns: 'string', min: 0, max: 1 },
  string: { returns: 'string', min: 0, max: 1 },
  concat: { returns: 'string', min: 2, max: -1 },
  'starts-with': { returns: 'boolean', min: 2, max: 2 },
  'ends-with': { returns: 'boolean', min: 2, max: 2 },
  contains: { returns: 'boolean', min: 2, max: 2 },
  'substring-before': { returns: 'string', min: 2, max: 2 },
  'substring-after': { returns: 'string', min: 2, max: 2 },
  substring: { returns: 'string', min: 2, max: 3 },
  'string-length': { returns: 'number', min: 0, max: 1 },
  'normalize-space': { returns: 'string', min: 0, max: 1 },
  translate: { returns: 'string', min: 3, max: 3 },
  'lower-case': { returns: 'string', min: 1, max: 1 },
  'upper-case': { returns: 'string', min: 1, max: 1 },
  boolean: { returns: 'boolean', min: 1, max: 1 },
  not: { returns: 'boolean', min: 1, max: 1 },
  true: { returns: 'boolean', min: 0, max: 0 },
  false: { returns: 'boolean', min: 0, max: 0 },
  lang: { returns: 'boolean', min: 1, max: 1 },
  number: { returns: 'number', min: 0, max: 1 },
  sum: { returns: 'number', min: 1, max: 1 },
  floor: { returns: 'number', min: 1, max: 1 },
  ceiling: { returns: 'number', min: 1, max: 1 },
  round: { returns: 'number', min: 1, max: 1 },
}));
/** Functions whose argument (if given) must be a node-set. */
const NODESET_ARG = new Set(['count', 'sum', 'local-name', 'namespace-uri', 'name']);

type StaticType = 'nodeset' | 'string' | 'number' | 'boolean' | 'unknown';

function staticType(e: Expr): StaticType {
  switch (e.kind) {
    case 'literal':
      return 'string';
    case 'number':
    case 'negate':
      return 'number';
    case 'call':
      return FUNCTIONS.get(e.name)?.returns ?? 'unknown';
    case 'binary':
      return ['or', 'and', '=', '!=', '<', '>', '<=', '>='].includes(e.op) ? 'boolean' : 'number';
    case 'union':
    case 'path':
      return 'nodeset';
    case 'filter':
      return e.predicates.length > 0 ? 'nodeset' : staticType(e.primary);
  }
}

const MAX_NESTING = 64;

class XPathParser {
  private readonly tokens: Token[];
  private index = 0;
  private depth = 0;

  constructor(tokens: Token[]) {
    this.tokens = tokens;
  }

  parse(): Expr {
    const expr = this.expr();
    if (this.peek().type !== 'eof') this.unexpected();
    return expr;
  }

  private peek(offset = 0): Token {
    return this.tokens[Math.min(this.index + offset, this.tokens.length - 1)]!;
  }

  private next(): Token {
    return this.tokens[this.index++]!;
  }

  private isOp(value: string, offset = 0): boolean {
    const t = this.peek(offset);
    return t.type === 'op' && t.value === value;
  }

  private expect(value: string): void {
    if (!this.isOp(value)) this.unexpected(`'${value}'`);
    this.index++;
  }

  private unexpected(expected?: string): never {
    const t = this.peek();
    const want = expected ? `, expected ${expected}` : '';
    if (t.type === 'eof') throw new XPathError(`unexpected end of expression${want}`);
    const shown = t.type === 'str' ? `"${t.value}"` : t.value;
    throw new XPathError(`unexpected token '${shown}' at position ${t.pos}${want}`);
  }

  private expr(): Expr {
    if (++this.depth > MAX_NESTING) throw new XPathError('expression is nested too deeply');
    const e = this.binaryLevel(0);
    this.depth--;
    return e;
  }

  /** Precedence climbing over: or < and < (= !=) < (< > <= >=) < (+ -) < (* div mod). */
  private static readonly LEVELS = [['or'], ['and'], ['=', '!='], ['<', '>', '<=', '>='], ['+', '-'], ['*', 'div', 'mod']];

  private binaryLevel(level: number): Expr {
    if (level === XPathParser.LEVELS.length) return this.unary();
    let left = this.binaryLevel(level + 1);
    for (;;) {
      const t = this.peek();
      if (t.type !== 'op' || !XPathParser.LEVELS[level]!.includes(t.value)) return left;
      this.index++;
      const right = this.binaryLevel(level + 1);
      left = { kind: 'binary', op: t.value, left, right };
    }
  }

  private unary(): Expr {
    if (this.isOp('-')) {
      this.index++;
      return { kind: 'negate', operand: this.unary() };
    }
    let left = this.pathExpr();
    while (this.isOp('|')) {
      const pos = this.peek().pos;
      this.index++;
      const right = this.pathExpr();
      for (const side of [left, right]) {
        const type = staticType(side);
        if (type !== 'nodeset' && type !== 'unknown') throw new XPathError(`'|' joins node-sets, not a ${type} (position ${pos})`);
      }
      left = { kind: 'union', left, right };
    }
    return left;
  }

  private pathExpr(): Expr {
    const t = this.peek();
    const startsFilter = t.type === 'num' || t.type === 'str' || t.type === 'func' || (t.type === 'op' && t.value === '(');
    if (!startsFilter) return this.locationPath();

    const primary = this.primary();
    const predicates = this.predicates();
    const filter: Expr = predicates.length > 0 ? { kind: 'filter', primary, predicates } : primary;
    if (predicates.length > 0 || this.isOp('/') || this.isOp('//')) {
      const type = staticType(primary);
      if (type !== 'nodeset' && type !== 'unknown') {
        throw new XPathError(`a ${predicates.length > 0 ? 'predicate' : 'path'} cannot apply to a ${type} (position ${t.pos})`);
      }
    }
    if (!this.isOp('/') && !this.isOp('//')) return filter;
    const steps: Step[] = [];
    this.relativePath(steps, true);
    return { kind: 'path', absolute: false, start: filter, steps: optimizeSteps(steps) };
  }

  private primary(): Expr {
    const t = this.next();
    if (t.type === 'num') return { kind: 'number', value: Number(t.value) };
    if (t.type === 'str') return { kind: 'literal', value: t.value };
    if (t.type === 'op' && t.value === '(') {
      const e = this.expr();
      this.expect(')');
      return e;
    }
    // func
    const fn = FUNCTIONS.get(t.value);
    if (!fn) throw new XPathError(`unknown function '${t.value}()' at position ${t.pos}`);
    this.expect('(');
    const args: Expr[] = [];
    if (!this.isOp(')')) {
      for (;;) {
        args.push(this.expr());
        if (!this.isOp(',')) break;
        this.index++;
      }
    }
    this.expect(')');
    if (args.length < fn.min || (fn.max >= 0 && args.length > fn.max)) {
      const want = fn.max < 0 ? `at least ${fn.min}` : fn.min === fn.max ? String(fn.min) : `${fn.min} to ${fn.max}`;
      throw new XPathError(`function '${t.value}()' takes ${want} argument(s), got ${args.length} (position ${t.pos})`);
    }
    if (NODESET_ARG.has(t.value) && args[0]) {
      const type = staticType(args[0]);
      if (type !== 'nodeset' && type !== 'unknown') throw new XPathError(`function '${t.value}()' needs a node-set argument, got a ${type} (position ${t.pos})`);
    }
    return { kind: 'call', name: t.value, args };
  }

  private predicates(): Expr[] {
    const list: Expr[] = [];
    while (this.isOp('[')) {
      this.index++;
      if (this.isOp(']')) this.unexpected('a predicate expression');
      list.push(this.expr());
      this.expect(']');
    }
    return list;
  }

  private locationPath(): Expr {
    const steps: Step[] = [];
    if (this.isOp('/')) {
      this.index++;
      // A lone `/` is the root; `/` followed by a step continues the path.
      if (this.startsStep()) this.relativePath(steps, false);
      return { kind: 'path', absolute: true, start: null, steps: optimizeSteps(steps) };
    }
    if (this.isOp('//')) {
      this.relativePath(steps, true);
      return { kind: 'path', absolute: true, start: null, steps: optimizeSteps(steps) };
    }
    if (!this.startsStep()) this.unexpected();
    this.relativePath(steps, false);
    return { kind: 'path', absolute: false, start: null, steps: optimizeSteps(steps) };
  }

  private startsStep(): boolean {
    const t = this.peek();
    if (t.type === 'name' || t.type === 'nodetype' || t.type === 'axis') return true;
    return t.type === 'op' && (t.value === '@' || t.value === '.' || t.value === '..');
  }

  /** Steps separated by `/` or `//`; `leadingSeparator` means a separator comes first. */
  private relativePath(steps: Step[], leadingSeparator: boolean): void {
    let separator = leadingSeparator;
    for (;;) {
      if (separator) {
        const sep = this.next().value;
        if (sep === '//') steps.push({ axis: 'descendant-or-self', test: { kind: 'node' }, predicates: [] });
      }
      steps.push(this.step());
      if (!this.isOp('/') && !this.isOp('//')) return;
      separator = true;
    }
  }

  private step(): Step {
    if (this.isOp('.')) {
      this.index++;
      return { axis: 'self', test: { kind: 'node' }, predicates: [] };
    }
    if (this.isOp('..')) {
      this.index++;
      return { axis: 'parent', test: { kind: 'node' }, predicates: [] };
    }
    let axis: Axis = 'child';
    if (this.isOp('@')) {
      this.index++;
      axis = 'attribute';
    } else if (this.peek().type === 'axis') {
      axis = this.next().value as Axis;
      this.expect('::');
    }
    const test = this.nodeTest();
    return { axis, test, predicates: this.predicates() };
  }

  private nodeTest(): NodeTest {
    const t = this.peek();
    if (t.type === 'name') {
      this.index++;
      if (t.value === '*') return { kind: 'any' };
      if (t.value.endsWith(':*')) return { kind: 'prefix', prefix: t.value.slice(0, -1), lower: t.value.slice(0, -1).toLowerCase() };
      return { kind: 'name', name: t.value, lower: t.value.toLowerCase() };
    }
    if (t.type === 'nodetype') {
      this.index++;
      this.expect('(');
      let target: string | null = null;
      if (t.value === 'processing-instruction' && this.peek().type === 'str') target = this.next().value;
      this.expect(')');
      if (t.value === 'processing-instruction') return { kind: 'pi', target };
      return { kind: t.value as 'text' | 'comment' | 'node' };
    }
    if (t.type === 'func') throw new XPathError(`'${t.value}()' is a function, not a node test (position ${t.pos})`);
    return this.unexpected('a node test');
  }
}

/**
 * `//x[...]` means descendant-or-self::node()/child::x[...]. When x's predicates cannot depend on
 * position, that is the same node-set as descendant::x[...], which one tree walk produces in
 * document order (no per-parent child lists, no sorting). `//li[1]` keeps the long form.
 */
function optimizeSteps(steps: Step[]): Step[] {
  const out: Step[] = [];
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i]!;
    const nextStep = steps[i + 1];
    if (
      step.axis === 'descendant-or-self' && step.test.kind === 'node' && step.predicates.length === 0 &&
      nextStep && nextStep.axis === 'child' && nextStep.predicates.every(positionIndependent)
    ) {
      out.push({ ...nextStep, axis: 'descendant' });
      i++;
    } else {
      out.push(step);
    }
  }
  return out;
}

/** True when a predicate is certainly boolean-valued and never asks for position() or last(). */
function positionIndependent(e: Expr): boolean {
  const type = staticType(e);
  if (type !== 'boolean' && type !== 'nodeset' && type !== 'string') return false;
  const usesPosition = (x: Expr): boolean => {
    switch (x.kind) {
      case 'call':
        return x.name === 'position' || x.name === 'last' || x.args.some(usesPosition);
      case 'binary':
      case 'union':
        return usesPosition(x.left) || usesPosition(x.right);
      case 'negate':
        return usesPosition(x.operand);
      case 'filter':
        return usesPosition(x.primary); // its own predicates have their own context
      case 'path':
        return x.start !== null && usesPosition(x.start);
      default:
        return false;
    }
  };
  return !usesPosition(e);
}

const xpathCache = new Map<string, Expr>();

function compileXPath(selector: string): Expr {
  return cached(xpathCache, selector, () => new XPathParser(tokenize(selector)).parse());
}

// ---- evaluation

/** Sorts nodes into document order and removes duplicates. */
function sortUnique(nodes: XNode[]): XNode[] {
  if (nodes.length < 2) return nodes;
  const keyed = nodes.map((n) => ({ n, k: orderKey(n) }));
  keyed.sort((a, b) => a.k - b.k);
  const out: XNode[] = [];
  let last = NaN;
  for (const { n, k } of keyed) {
    if (k !== last) out.push(n);
    last = k;
  }
  return out;
}

/**
 * Document order from the parser's source offsets: a node starts after its ancestors and before
 * its following nodes, and no two nodes start at the same offset. Attributes sort after their
 * element and before its children (which start at least one character later).
 */
function orderKey(n: XNode): number {
  if (n instanceof AttributeNode) {
    const names = Object.keys(n.owner.attribs);
    return (n.owner.startIndex ?? 0) + (names.indexOf(n.name) + 1) / (names.length + 1);
  }
  return isDocument(n) ? -1 : (n.startIndex ?? 0);
}

/** Pre-order successor of `node` within `root`'s subtree; `descend` = enter node's children. */
function nextInDocument(node: AnyNode, root: AnyNode, descend: boolean): AnyNode | null {
  if (descend && hasChildren(node) && node.children.length > 0) return node.children[0]!;
  let current: AnyNode | null = node;
  while (current && current !== root) {
    if (current.next) return current.next;
    current = current.parent;
  }
  return null;
}

/** Doctype and the XML declaration are not XPath nodes. */
function isHidden(node: AnyNode): boolean {
  return isDirective(node) && (node.name.startsWith('!') || node.name.toLowerCase() === '?xml');
}

/** CDATA sections are text in the XPath data model: do not walk into them. */
function walksInto(node: AnyNode): boolean {
  return !isCDATA(node);
}

interface Context {
  node: XNode;
  position: number;
  size: number;
  doc: HtmlTree;
}

function evaluate(e: Expr, ctx: Context): XValue {
  switch (e.kind) {
    case 'literal':
    case 'number':
      return e.value;
    case 'negate':
      return -toNumber(evaluate(e.operand, ctx));
    case 'binary':
      return evaluateBinary(e.op, e.left, e.right, ctx);
    case 'union': {
      const left = evaluate(e.left, ctx);
      const right = evaluate(e.right, ctx);
      if (!Array.isArray(left) || !Array.isArray(right)) throw new XPathError("'|' joins node-sets only");
      return sortUnique([...left, ...right]);
    }
    case 'filter': {
      const base = evaluate(e.primary, ctx);
      if (!Array.isArray(base)) throw new XPathError('a predicate can only filter a node-set');
      let nodes = base;
      for (const p of e.predicates) nodes = filterByPredicate(nodes, p, ctx.doc);
      return nodes;
    }
    case 'path':
      return evaluatePath(e, ctx);
    case 'call':
      return callFunction(e.name, e.args, ctx);
  }
}

function evaluatePath(e: Extract<Expr, { kind: 'path' }>, ctx: Context): XNode[] {
  let nodes: XNode[];
  if (e.start) {
    const start = evaluate(e.start, ctx);
    if (!Array.isArray(start)) throw new XPathError('a path can only continue from a node-set');
    nodes = start;
  } else if (e.absolute) {
    nodes = [ctx.doc.doc];
  } else {
    nodes = [ctx.node];
  }
  for (const step of e.steps) {
    if (nodes.length === 1) {
      nodes = applyStep(step, nodes[0]!, ctx.doc);
    } else {
      const all: XNode[] = [];
      for (const n of nodes) for (const r of applyStep(step, n, ctx.doc)) all.push(r);
      nodes = sortUnique(all);
    }
    if (nodes.length === 0) break;
  }
  return nodes;
}

/** One step from one context node: the axis in axis order, filtered by predicates, returned in document order. */
function applyStep(step: Step, node: XNode, doc: HtmlTree): XNode[] {
  let nodes = collectAxis(step, node, doc);
  for (const p of step.predicates) nodes = filterByPredicate(nodes, p, doc);
  return REVERSE_AXES.has(step.axis) ? nodes.reverse() : nodes;
}

/**
 * `[@name='literal']` (either side, `=` or `!=`): the commonest predicate of scraping paths, answered
 * from the element's attribute map without building attribute nodes. Null when the shape differs.
 */
function attributeTest(predicate: Expr, html: boolean): { attr: string; value: string; equal: boolean } | null {
  if (predicate.kind !== 'binary' || (predicate.op !== '=' && predicate.op !== '!=')) return null;
  const pair = predicate.left.kind === 'literal' ? [predicate.right, predicate.left] : [predicate.left, predicate.right];
  const [path, literal] = pair as [Expr, Expr];
  if (literal.kind !== 'literal' || path.kind !== 'path' || path.absolute || path.start || path.steps.length !== 1) return null;
  const step = path.steps[0]!;
  if (step.axis !== 'attribute' || step.test.kind !== 'name' || step.predicates.length) return null;
  return { attr: html ? step.test.lower : step.test.name, value: literal.value, equal: predicate.op === '=' };
}

function filterByPredicate(nodes: XNode[], predicate: Expr, doc: HtmlTree): XNode[] {
  // A constant number predicate ([1], [3]) is a plain index.
  if (predicate.kind === 'number') {
    const hit = Number.isInteger(predicate.value) ? nodes[predicate.value - 1] : undefined;
    return hit ? [hit] : [];
  }
  const fast = attributeTest(predicate, !doc.xml);
  if (fast) {
    // Same XPath semantics: `@a='x'` is true when the attribute exists with that value; `@a!='x'`
    // when it exists with another value (an absent attribute is an empty node-set: false for both).
    return nodes.filter((n) => {
      if (!isTag(n as AnyNode)) return false;
      const v = (n as Element).attribs[fast.attr];
      return v !== undefined && (v === fast.value) === fast.equal;
    });
  }
  const size = nodes.length;
  const out: XNode[] = [];
  for (let i = 0; i < size; i++) {
    const value = evaluate(predicate, { node: nodes[i]!, position: i + 1, size, doc });
    if (typeof value === 'number' ? value === i + 1 : toBoolean(value)) out.push(nodes[i]!);
  }
  return out;
}

function collectAxis(step: Step, node: XNode, doc: HtmlTree): XNode[] {
  const out: XNode[] = [];
  const html = !doc.xml;
  const test = step.test;
  const add = (n: XNode): void => {
    if (matchesTest(test, n, step.axis === 'attribute', html)) out.push(n);
  };
  if (node instanceof AttributeNode) {
    // Attributes have a parent (their element) but are nobody's child or sibling.
    switch (step.axis) {
      case 'self':
      case 'ancestor-or-self':
        add(node);
        if (step.axis === 'self') return out;
        for (let p: AnyNode | null = node.owner; p; p = p.parent) add(p);
        return out;
      case 'parent':
        add(node.owner);
        return out;
      case 'ancestor':
        for (let p: AnyNode | null = node.owner; p; p = p.parent) add(p);
        return out;
      case 'following':
        // Everything after the owner's start tag except the owner's ancestors: its descendants first.
        descendants(node.owner, add);
        following(node.owner, add);
        return out;
      case 'preceding':
        preceding(node.owner, add);
        return out;
      default:
        return out;
    }
  }
  switch (step.axis) {
    case 'child':
      if (hasChildren(node) && walksInto(node)) for (const c of node.children) if (!isHidden(c)) add(c);
      break;
    case 'descendant':
      if (test.kind === 'name') {
        // The common //name: compare names directly instead of going through matchesTest.
        const name = html ? test.lower : test.name;
        // The page's name index answers without walking the tree: everything from the document,
        // the run of start offsets inside the element otherwise.
        if (node === doc.doc) return [...elementsNamed(doc, name)];
        const inside = descendantsNamed(doc, node, name);
        if (inside) return inside;
        descendants(node, (n) => {
          if (isTag(n) && n.name === name) out.push(n);
        });
      } else {
        descendants(node, add);
      }
      break;
    case 'descendant-or-self':
      add(node);
      descendants(node, add);
      break;
    case 'self':
      add(node);
      break;
    case 'parent':
      if (node.parent) add(node.parent);
      break;
    case 'ancestor':
      for (let p = node.parent; p; p = p.parent) add(p);
      break;
    case 'ancestor-or-self':
      for (let p: AnyNode | null = node; p; p = p.parent) add(p);
      break;
    case 'following-sibling':
      for (let s = node.next; s; s = s.next) if (!isHidden(s)) add(s);
      break;
    case 'preceding-sibling':
      for (let s = node.prev; s; s = s.prev) if (!isHidden(s)) add(s);
      break;
    case 'following':
      following(node, add);
      break;
    case 'preceding':
      preceding(node, add);
      break;
    case 'attribute':
      if (!isTag(node)) break;
      if (step.test.kind === 'name') {
        // The common @name: one lookup instead of a node per attribute.
        const name = html ? step.test.lower : step.test.name;
        if (Object.hasOwn(node.attribs, name)) out.push(new AttributeNode(node, name, node.attribs[name]!));
      } else {
        for (const [name, value] of Object.entries(node.attribs)) add(new AttributeNode(node, name, value));
      }
      break;
  }
  return out;
}

/**
 * Elements named `name` inside `node`, from the name index: those whose start offset lies after the
 * node's own and before the first node that follows it outside it. Null when offsets are missing.
 */
function descendantsNamed(tree: HtmlTree, node: AnyNode, name: string): Element[] | null {
  const start = node.startIndex;
  if (start === null) return null;
  let bound = Infinity;
  for (let cur: AnyNode | null = node; cur; cur = cur.parent) {
    if (cur.next) {
      if (cur.next.startIndex === null) return null;
      bound = cur.next.startIndex;
      break;
    }
  }
  const list = elementsNamed(tree, name);
  // First element starting after the node (binary search: the list is in document order).
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((list[mid]!.startIndex ?? -1) <= start) lo = mid + 1;
    else hi = mid;
  }
  const out: Element[] = [];
  for (let i = lo; i < list.length && list[i]!.startIndex! < bound; i++) out.push(list[i]!);
  return out;
}

/** Descendants of `root` in document order (without `root`); an explicit stack, no recursion. */
function descendants(root: AnyNode, visit: (n: AnyNode) => void): void {
  if (!hasChildren(root) || !walksInto(root) || root.children.length === 0) return;
  const lists: AnyNode[][] = [root.children];
  const positions: number[] = [0];
  while (lists.length > 0) {
    const top = lists.length - 1;
    const list = lists[top]!;
    const i = positions[top]!;
    if (i >= list.length) {
      lists.pop();
      positions.pop();
      continue;
    }
    positions[top] = i + 1;
    const n = list[i]!;
    if (isHidden(n)) continue;
    visit(n);
    if (hasChildren(n) && n.children.length > 0 && walksInto(n)) {
      lists.push(n.children);
      positions.push(0);
    }
  }
}

/** Nodes after `node` in document order, excluding its descendants. */
function following(node: AnyNode, visit: (n: AnyNode) => void): void {
  for (let cur: AnyNode | null = node; cur; cur = cur.parent) {
    for (let s = cur.next; s; s = s.next) {
      if (isHidden(s)) continue;
      visit(s);
      descendants(s, visit);
    }
  }
}

/** Nodes before `node` in reverse document order, excluding its ancestors. */
function preceding(node: AnyNode, visit: (n: AnyNode) => void): void {
  for (let cur: AnyNode | null = node; cur; cur = cur.parent) {
    for (let s = cur.prev; s; s = s.prev) {
      if (isHidden(s)) continue;
      const inner: AnyNode[] = [];
      descendants(s, (d) => inner.push(d));
      for (let i = inner.length - 1; i >= 0; i--) visit(inner[i]!);
      visit(s);
    }
  }
}

function matchesTest(test: NodeTest, n: XNode, attributeAxis: boolean, html: boolean): boolean {
  switch (test.kind) {
    case 'name':
      if (attributeAxis) return n instanceof AttributeNode && n.name === (html ? test.lower : test.name);
      return !(n instanceof AttributeNode) && isTag(n) && n.name === (html ? test.lower : test.name);
    case 'any':
      return attributeAxis ? n instanceof AttributeNode : !(n instanceof AttributeNode) && isTag(n);
    case 'prefix': {
      const prefix = html ? test.lower : test.prefix;
      if (attributeAxis) return n instanceof AttributeNode && n.name.startsWith(prefix);
      return !(n instanceof AttributeNode) && isTag(n) && n.name.startsWith(prefix);
    }
    case 'node':
      return true;
    case 'text':
      return !(n instanceof AttributeNode) && (isText(n) || isCDATA(n));
    case 'comment':
      return !(n instanceof AttributeNode) && isComment(n);
    case 'pi':
      return (
        !(n instanceof AttributeNode) && isDirective(n) && !isHidden(n) &&
        (test.target === null || n.name.slice(1) === test.target)
      );
  }
}

// ---- values and conversions

/** XPath string-value of a node (script/style descendants excluded, see the notes above). */
function stringValue(n: XNode): string {
  if (n instanceof AttributeNode) return n.value;
  if (isText(n) || isComment(n) || isDirective(n)) return n.data;
  const parts: string[] = [];
  let cur = nextInDocument(n, n, true);
  while (cur) {
    let descend = true;
    if (isText(cur)) parts.push(cur.data);
    else if (isTag(cur) && TEXTLESS.has(cur.name)) descend = false;
    cur = nextInDocument(cur, n, descend);
  }
  return parts.join('');
}

function toStringValue(v: XValue): string {
  if (Array.isArray(v)) return v.length > 0 ? stringValue(v[0]!) : '';
  if (typeof v === 'number') return numberToString(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  return v;
}

function numberToString(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return 'Infinity';
  if (n === -Infinity) return '-Infinity';
  if (n === 0) return '0';
  const s = String(n);
  // XPath never uses exponent notation.
  return /e/i.test(s) ? n.toLocaleString('en-US', { useGrouping: false, maximumFractionDigits: 20 }) : s;
}

function toNumber(v: XValue): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  const s = (Array.isArray(v) ? toStringValue(v) : v).replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, '');
  return /^-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$/.test(s) ? Number(s) : NaN;
}

function toBoolean(v: XValue): boolean {
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'number') return v !== 0 && !Number.isNaN(v);
  if (typeof v === 'string') return v.length > 0;
  return v;
}

function evaluateBinary(op: string, leftExpr: Expr, rightExpr: Expr, ctx: Context): XValue {
  if (op === 'or') return toBoolean(evaluate(leftExpr, ctx)) || toBoolean(evaluate(rightExpr, ctx));
  if (op === 'and') return toBoolean(evaluate(leftExpr, ctx)) && toBoolean(evaluate(rightExpr, ctx));
  const left = evaluate(leftExpr, ctx);
  const right = evaluate(rightExpr, ctx);
  switch (op) {
    case '+':
      return toNumber(left) + toNumber(right);
    case '-':
      return toNumber(left) - toNumber(right);
    case '*':
      return toNumber(left) * toNumber(right);
    case 'div':
      return toNumber(left) / toNumber(right);
    case 'mod':
      return toNumber(left) % toNumber(right); // truncating remainder, as XPath specifies
    default:
      return compare(op, left, right);
  }
}

/** Comparison per XPath 1.0 §3.4, including the existential semantics of node-sets. */
function compare(op: string, left: XValue, right: XValue): boolean {
  const leftSet = Array.isArray(left);
  const rightSet = Array.isArray(right);
  if (leftSet && rightSet) {
    const rightStrings = right.map(stringValue);
    return left.some((l) => {
      const ls = stringValue(l);
      return rightStrings.some((rs) => compareAtoms(op, ls, rs));
    });
  }
  if (leftSet || rightSet) {
    const set = (leftSet ? left : right) as XNode[];
    const other = (leftSet ? right : left) as string | number | boolean;
    if (typeof other === 'boolean') return compareAtoms(op, leftSet ? toBoolean(set) : other, leftSet ? other : toBoolean(set));
    return set.some((n) => {
      const s = stringValue(n);
      const atom = typeof other === 'number' ? toNumber(s) : s;
      return leftSet ? compareAtoms(op, atom, other) : compareAtoms(op, other, atom);
    });
  }
  return compareAtoms(op, left as string | number | boolean, right as string | number | boolean);
}

function compareAtoms(op: string, a: string | number | boolean, b: string | number | boolean): boolean {
  if (op === '=' || op === '!=') {
    let equal: boolean;
    if (typeof a === 'boolean' || typeof b === 'boolean') equal = toBoolean(a) === toBoolean(b);
    else if (typeof a === 'number' || typeof b === 'number') equal = toNumber(a) === toNumber(b);
    else equal = a === b;
    return op === '=' ? equal : !equal;
  }
  const x = toNumber(a);
  const y = toNumber(b);
  switch (op) {
    case '<':
      return x < y;
    case '>':
      return x > y;
    case '<=':
      return x <= y;
    default:
      return x >= y;
  }
}

function callFunction(name: string, args: Expr[], ctx: Context): XValue {
  const arg = (i: number): XValue => evaluate(args[i]!, ctx);
  const str = (i: number): string => (args[i] ? toStringValue(arg(i)) : stringValue(ctx.node));
  const num = (i: number): number => toNumber(arg(i));
  const nodeArg = (): XNode | undefined => {
    if (!args[0]) return ctx.node;
    const v = arg(0);
    if (!Array.isArray(v)) throw new XPathError(`${name}() needs a node-set argument`);
    return v[0];
  };
  switch (name) {
    case 'last':
      return ctx.size;
    case 'position':
      return ctx.position;
    case 'count': {
      const v = arg(0);
      if (!Array.isArray(v)) throw new XPathError('count() needs a node-set argument');
      return v.length;
    }
    case 'sum': {
      const v = arg(0);
      if (!Array.isArray(v)) throw new XPathError('sum() needs a node-set argument');
      return v.reduce((acc, n) => acc + toNumber(stringValue(n)), 0);
    }
    case 'id': {
      const v = arg(0);
      const ids = new Set((Array.isArray(v) ? v.map(stringValue).join(' ') : toStringValue(v)).split(/[ \t\r\n]+/).filter(Boolean));
      const found: XNode[] = [];
      descendants(ctx.doc.doc, (n) => {
        if (isTag(n) && n.attribs.id !== undefined && ids.has(n.attribs.id)) found.push(n);
      });
      return found;
    }
    case 'name':
    case 'local-name': {
      const n = nodeArg();
      if (!n) return '';
      const full = n instanceof AttributeNode ? n.name : isTag(n) ? n.name : isDirective(n) && !isHidden(n) ? n.name.slice(1) : '';
      return name === 'local-name' ? full.slice(full.indexOf(':') + 1) : full;
    }
    case 'namespace-uri':
      nodeArg();
      return '';
    case 'string':
      return str(0);
    case 'concat':
      return args.map((_, i) => str(i)).join('');
    case 'starts-with':
      return str(0).startsWith(str(1));
    case 'ends-with':
      return str(0).endsWith(str(1));
    case 'contains':
      return str(0).includes(str(1));
    case 'substring-before': {
      const s = str(0);
      const i = s.indexOf(str(1));
      return i < 0 ? '' : s.slice(0, i);
    }
    case 'substring-after': {
      const s = str(0);
      const t = str(1);
      const i = s.indexOf(t);
      return i < 0 ? '' : s.slice(i + t.length);
    }
    case 'substring': {
      // Positions count characters from 1; the bounds are rounded and compared (NaN selects nothing).
      const chars = Array.from(str(0));
      const start = xpathRound(num(1));
      const end = args.length > 2 ? start + xpathRound(num(2)) : Infinity;
      return chars.filter((_, i) => i + 1 >= start && i + 1 < end).join('');
    }
    case 'string-length':
      return Array.from(str(0)).length;
    case 'normalize-space':
      return str(0).replace(/[ \t\r\n]+/g, ' ').replace(/^ | $/g, '');
    case 'translate': {
      const from = Array.from(str(1));
      const to = Array.from(str(2));
      return Array.from(str(0))
        .map((c) => {
          const i = from.indexOf(c);
          return i < 0 ? c : (to[i] ?? '');
        })
        .join('');
    }
    case 'lower-case':
      return str(0).toLowerCase();
    case 'upper-case':
      return str(0).toUpperCase();
    case 'boolean':
      return toBoolean(arg(0));
    case 'not':
      return !toBoolean(arg(0));
    case 'true':
      return true;
    case 'false':
      return false;
    case 'lang': {
      const want = str(0).toLowerCase();
      let el: AnyNode | null = ctx.node instanceof AttributeNode ? ctx.node.owner : ctx.node;
      for (; el; el = el.parent) {
        if (!isTag(el)) continue;
        const lang = el.attribs['xml:lang'] ?? el.attribs.lang;
        if (lang !== undefined) {
          const l = lang.toLowerCase();
          return l === want || l.startsWith(`${want}-`);
        }
      }
      return false;
    }
    case 'number':
      return args[0] ? num(0) : toNumber(stringValue(ctx.node));
    case 'floor':
      return Math.floor(num(0));
    case 'ceiling':
      return Math.ceil(num(0));
    case 'round':
      return xpathRound(num(0));
    default:
      throw new XPathError(`unknown function '${name}()'`);
  }
}

/** XPath round(): half rounds toward positive infinity, like Math.round. */
function xpathRound(n: number): number {
  return Math.round(n);
}

function extractXPath(tree: HtmlTree, spec: ExtractorSpec): ExtractedValue {
  const expr = compileXPath(spec.selector);
  const result = evaluate(expr, { node: tree.doc, position: 1, size: 1, doc: tree });
  if (!Array.isArray(result)) {
    if (typeof result === 'number' && !Number.isFinite(result)) {
      return miss(spec, `XPath '${spec.selector}' evaluates to ${numberToString(result)}`);
    }
    return { name: spec.name, value: result, warning: null };
  }
  const noMatch = `XPath '${spec.selector}' matches nothing`;
  if (spec.attribute !== undefined) {
    const elements = result.filter((n): n is Element => !(n instanceof AttributeNode) && isTag(n));
    return elementValues(spec, elements, tree.xml, noMatch);
  }
  const values = (spec.multiple ? result : result.slice(0, 1)).map((n) =>
    n instanceof AttributeNode ? n.value : readableText(n),
  );
  return fromList(spec, values, noMatch);
}

// ---------------------------------------------------------------------------------------------
// Charset decoding

/**
 * Decodes a fetched body. The charset comes from, in order: a byte order mark (UTF-8, UTF-16LE/BE;
 * browsers let it win over everything), the Content-Type header's charset, a `<meta charset>` /
 * `<meta http-equiv="Content-Type" content="...; charset=...">` / XML declaration in the first
 * 2 KB, else UTF-8. Labels follow the WHATWG Encoding Standard (TextDecoder): `latin1` and
 * `iso-8859-1` decode as windows-1252, `gb2312` as GBK, and so on. Undecodable bytes become U+FFFD.
 */
export function decodeBody(bytes: Buffer, contentType: string | undefined): string {
  return new TextDecoder(sniffCharset(bytes, contentType)).decode(bytes);
}

function sniffCharset(bytes: Buffer, contentType: string | undefined): string {
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) return 'utf-8';
  if (bytes[0] === 0xff && bytes[1] === 0xfe) return 'utf-16le';
  if (bytes[0] === 0xfe && bytes[1] === 0xff) return 'utf-16be';

  const fromHeader = contentType ? /charset\s*=\s*["']?([^\s;"',]+)/i.exec(contentType)?.[1] : undefined;
  const headerEncoding = fromHeader ? encodingOf(fromHeader) : null;
  if (headerEncoding) return headerEncoding;

  // The prescan reads ASCII only, so any ASCII-compatible decoding of the bytes will do.
  const head = bytes.subarray(0, 2048).toString('latin1');
  const declared =
    /<meta\s[^>]*?charset\s*=\s*["']?\s*([-\w.:]+)/i.exec(head)?.[1] ??
    /^\s*<\?xml\s[^>]*?encoding\s*=\s*["']([-\w.:]+)["']/i.exec(head)?.[1];
  const declaredEncoding = declared ? encodingOf(declared) : null;
  // A page whose markup was readable as ASCII cannot be UTF-16, whatever it claims (WHATWG rule).
  if (declaredEncoding) return declaredEncoding.startsWith('utf-16') ? 'utf-8' : declaredEncoding;
  return 'utf-8';
}

/** The canonical encoding name for a label, or null when TextDecoder does not know it. */
function encodingOf(label: string): string | null {
  try {
    return new TextDecoder(label.trim()).encoding;
  } catch {
    return null;
  }
}
