/**
 * A company's home page: fetched through the SSRF-guarded client and read for the facts it states
 * about itself — title, meta description, OpenGraph tags, schema.org JSON-LD organization data
 * (also inside `@graph` and behind `@id` references), links to social profiles, mailto: and tel:
 * links. Nothing here guesses: a field is set only when the page says it.
 */
import type { AnyNode } from 'domhandler';
import { findAll, getAttributeValue, textContent } from 'domutils';
import { parseDocument } from 'htmlparser2';
import { type HttpOut, isOutboundRequestError } from '../../platform/http-out/index.ts';

export interface PostalAddress {
  street: string | null;
  locality: string | null;
  region: string | null;
  postalCode: string | null;
  country: string | null;
}

export interface PagePerson {
  name: string;
  role: string;
  email?: string;
}

/** What a schema.org Organization (or Corporation, LocalBusiness, ...) node of the page states. */
export interface OrganizationFacts {
  type: string;
  name: string | null;
  legalName: string | null;
  description: string | null;
  url: string | null;
  logo: string | null;
  founded: string | null;
  /** As the page states it; one of `address` or this is set when the page gives an address. */
  addressText: string | null;
  address: PostalAddress | null;
  /** `"120"`, `"50-200"` or `"50+"`. */
  employeeCount: string | null;
  sameAs: string[];
  emails: string[];
  phones: string[];
  people: PagePerson[];
  /** The node itself, for summaries (truncated by the caller). */
  raw: Record<string, unknown>;
}

export interface PageFacts {
  /** The URL that answered (after redirects). */
  url: string;
  title: string | null;
  /** `<meta name="description">`. */
  description: string | null;
  opengraph: { siteName?: string; title?: string; description?: string; image?: string };
  organization: OrganizationFacts | null;
  /** Profiles linked from the page (`<a href>`), one per platform. */
  socialLinks: Record<string, string>;
  /** From mailto: links. */
  emails: string[];
  /** From tel: links. */
  phones: string[];
  /** JSON-LD blocks that were not valid JSON. */
  invalidJsonLd: number;
}

export type FetchOutcome =
  | { ok: true; url: string; html: string }
  | { ok: false; reason: string; message: string };

const MAX_PAGE_BYTES = 2 * 1024 * 1024;
const FETCH_BUDGET_MS = 10_000;
// Failures an http:// retry can fix; refused addresses, DNS failures and bad status codes it cannot.
const RETRY_OVER_HTTP = new Set(['connection_failed', 'connect_timeout']);

const ORGANIZATION_TYPES = new Set([
  'Organization',
  'Corporation',
  'LocalBusiness',
  'OnlineBusiness',
  'OnlineStore',
  'ProfessionalService',
  'NGO',
  'EducationalOrganization',
  'NewsMediaOrganization',
  'MedicalOrganization',
  'SportsOrganization',
  'GovernmentOrganization',
  'Store',
  'Airline',
  'Consortium',
  'CooperativeOrganization',
  'FundingScheme',
  'ResearchOrganization',
  'WorkersUnion',
]);

/**
 * The first of `candidates` that answers (e.g. the https and then the http address of a bare host);
 * the next is tried only when the connection itself failed. One 10 s budget covers all tries.
 */
export async function fetchHomePage(outbound: HttpOut, candidates: string[], signal?: AbortSignal): Promise<FetchOutcome> {
  const deadline = Date.now() + FETCH_BUDGET_MS;
  let last: FetchOutcome = { ok: false, reason: 'not_attempted', message: 'No address to fetch' };
  for (const url of candidates) {
    const timeoutMs = deadline - Date.now();
    if (timeoutMs <= 0) break;
    try {
      const res = await outbound.request(url, {
        timeoutMs,
        maxResponseBytes: MAX_PAGE_BYTES,
        signal,
        headers: { accept: 'text/html,application/xhtml+xml;q=0.9,*/*;q=0.5', 'accept-language': 'en' },
      });
      if (res.status < 200 || res.status > 299) return { ok: false, reason: 'http_status', message: `${res.url} answered HTTP ${res.status}` };
      const type = String(headerOf(res.headers, 'content-type') ?? '');
      if (type && !/html|xml/i.test(type)) return { ok: false, reason: 'not_html', message: `${res.url} is not a web page (${type.split(';')[0]})` };
      return { ok: true, url: res.url, html: decodeBody(res.body, type) };
    } catch (err) {
      if (!isOutboundRequestError(err)) throw err;
      last = { ok: false, reason: err.reason, message: err.message };
      if (!RETRY_OVER_HTTP.has(err.reason)) break;
    }
  }
  return last;
}

function headerOf(headers: Record<string, string | string[]>, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The body as text, in the charset the header or a `<meta charset>` names (UTF-8 otherwise). */
function decodeBody(body: Buffer, contentType: string): string {
  const fromHeader = /charset=["']?([\w-]+)/i.exec(contentType)?.[1];
  const fromMeta = /<meta[^>]+charset=["']?([\w-]+)/i.exec(body.subarray(0, 4096).toString('latin1'))?.[1];
  for (const label of [fromHeader, fromMeta, 'utf-8']) {
    if (!label) continue;
    try {
      return new TextDecoder(label).decode(body);
    } catch {
      // Unknown label: try the next one.
    }
  }
  return body.toString('utf8');
}

const clean = (s: string | null | undefined): string | null => {
  const t = (s ?? '').replace(/\s+/g, ' ').trim();
  return t ? t : null;
};

function absolute(href: string | null | undefined, base: string): string | null {
  if (!href) return null;
  try {
    const u = new URL(href.trim(), base);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.toString() : null;
  } catch {
    return null;
  }
}

const EMAIL = /^[^\s@<>()[\]\\,;:"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/;

function emailOf(value: string | null | undefined): string | null {
  if (!value) return null;
  let v = value.trim().replace(/^mailto:/i, '').split('?')[0] ?? '';
  try {
    v = decodeURIComponent(v);
  } catch {
    return null;
  }
  v = v.trim().toLowerCase();
  return EMAIL.test(v) ? v : null;
}

function phoneOf(value: string | null | undefined): string | null {
  if (!value) return null;
  let v = value.trim().replace(/^tel:/i, '');
  try {
    v = decodeURIComponent(v);
  } catch {
    return null;
  }
  v = v.trim();
  return /^\+?[\d\s().-]{5,30}$/.test(v) && /\d{5,}/.test(v.replace(/\D/g, '')) ? v : null;
}

// Social platforms by host, and paths that are share buttons or posts rather than the company's profile.
const SOCIAL_HOSTS: { platform: string; hosts: string[]; notProfile: RegExp }[] = [
  { platform: 'linkedin', hosts: ['linkedin.com'], notProfile: /^\/(share|sharing|shareArticle|feed|posts)\b/i },
  { platform: 'twitter', hosts: ['twitter.com', 'x.com'], notProfile: /^\/(intent|share|home|search|hashtag|i)\b|\/status\//i },
  { platform: 'facebook', hosts: ['facebook.com', 'fb.com'], notProfile: /^\/(sharer|share|dialog|plugins|login)\b/i },
  { platform: 'github', hosts: ['github.com'], notProfile: /^\/(login|features|pricing|about)\b/i },
  { platform: 'instagram', hosts: ['instagram.com'], notProfile: /^\/(p|reel|explore)\//i },
  { platform: 'youtube', hosts: ['youtube.com', 'youtu.be'], notProfile: /^\/(watch|embed|shorts|results)\b/i },
];

/** `{platform, url}` when `href` is a profile on a known social platform. */
export function socialProfileOf(href: string): { platform: string; url: string } | null {
  let u: URL;
  try {
    u = new URL(href);
  } catch {
    return null;
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return null;
  const host = u.hostname.toLowerCase().replace(/^(www|m|mobile)\./, '');
  const entry = SOCIAL_HOSTS.find((s) => s.hosts.some((h) => host === h || host.endsWith(`.${h}`)));
  if (!entry) return null;
  if (u.pathname === '/' || u.pathname === '' || entry.notProfile.test(u.pathname)) return null;
  u.hash = '';
  return { platform: entry.platform, url: u.toString() };
}

/** Reads the facts a page states about its company. */
export function parseCompanyPage(html: string, pageUrl: string): PageFacts {
  const doc = parseDocument(html);
  const elements = (name: string) => findAll((e) => e.name === name, doc.children);

  const title = clean(textContent(elements('title')[0] ?? []));
  let description: string | null = null;
  const opengraph: PageFacts['opengraph'] = {};
  for (const meta of elements('meta')) {
    const key = (getAttributeValue(meta, 'property') ?? getAttributeValue(meta, 'name') ?? '').trim().toLowerCase();
    const content = clean(getAttributeValue(meta, 'content'));
    if (!key || !content) continue;
    if (key === 'description') description ??= content;
    else if (key === 'og:site_name') opengraph.siteName ??= content;
    else if (key === 'og:title') opengraph.title ??= content;
    else if (key === 'og:description') opengraph.description ??= content;
    else if (key === 'og:image' || key === 'og:image:url' || key === 'og:image:secure_url') {
      const img = absolute(content, pageUrl);
      if (img) opengraph.image ??= img;
    }
  }

  const socialLinks: Record<string, string> = {};
  const emails = new Set<string>();
  const phones = new Set<string>();
  for (const a of elements('a')) {
    const href = getAttributeValue(a, 'href')?.trim();
    if (!href) continue;
    if (/^mailto:/i.test(href)) {
      const e = emailOf(href);
      if (e) emails.add(e);
    } else if (/^tel:/i.test(href)) {
      const p = phoneOf(href);
      if (p) phones.add(p);
    } else {
      const abs = absolute(href, pageUrl);
      const profile = abs ? socialProfileOf(abs) : null;
      if (profile) socialLinks[profile.platform] ??= profile.url;
    }
  }

  let invalidJsonLd = 0;
  const blocks: unknown[] = [];
  for (const script of elements('script')) {
    const type = (getAttributeValue(script, 'type') ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/ld+json') continue;
    const text = textContent(script as AnyNode).trim();
    if (!text) continue;
    try {
      blocks.push(JSON.parse(text) as unknown);
    } catch {
      invalidJsonLd++;
    }
  }

  return {
    url: pageUrl,
    title,
    description,
    opengraph,
    organization: organizationOf(blocks, pageUrl),
    socialLinks,
    emails: [...emails],
    phones: [...phones],
    invalidJsonLd,
  };
}

// ---------------------------------------------------------------------------------------------
// JSON-LD

type Node = Record<string, unknown>;
const isNode = (v: unknown): v is Node => typeof v === 'object' && v !== null && !Array.isArray(v);
const asList = (v: unknown): unknown[] => (v === undefined || v === null ? [] : Array.isArray(v) ? v : [v]);

/** `Organization`, `schema:Organization` and `https://schema.org/Organization` are one type. */
function typesOf(n: Node): string[] {
  return asList(n['@type'])
    .filter((t): t is string => typeof t === 'string')
    .map((t) => t.replace(/^.*[/:#]/, ''));
}

/** Every typed object in the blocks (nested ones too), and the `@id` index for references. */
function collectNodes(blocks: unknown[]): { nodes: Node[]; byId: Map<string, Node> } {
  const nodes: Node[] = [];
  const byId = new Map<string, Node>();
  const walk = (v: unknown, depth: number) => {
    if (depth > 10 || nodes.length > 5000) return;
    if (Array.isArray(v)) {
      for (const x of v) walk(x, depth + 1);
      return;
    }
    if (!isNode(v)) return;
    const id = typeof v['@id'] === 'string' ? v['@id'] : null;
    const hasContent = Object.keys(v).some((k) => k !== '@id');
    if (id && hasContent && !byId.has(id)) byId.set(id, v);
    if (v['@type'] !== undefined) nodes.push(v);
    for (const [k, x] of Object.entries(v)) if (k !== '@context') walk(x, depth + 1);
  };
  walk(blocks, 0);
  return { nodes, byId };
}

/** A value's text: a string, a number, `{"@value": ...}`, or `{name}`; the first of a list. */
function textOf(v: unknown): string | null {
  for (const x of asList(v)) {
    if (typeof x === 'string') return clean(x);
    if (typeof x === 'number') return String(x);
    if (isNode(x)) {
      const inner = x['@value'] ?? x.name;
      if (typeof inner === 'string' || typeof inner === 'number') return clean(String(inner));
    }
  }
  return null;
}

function employeeCountOf(v: unknown): string | null {
  const first = asList(v)[0];
  if (typeof first === 'number' && Number.isFinite(first)) return String(first);
  if (typeof first === 'string') return clean(first);
  if (!isNode(first)) return null;
  const value = textOf(first.value);
  if (value) return value;
  const min = textOf(first.minValue);
  const max = textOf(first.maxValue);
  if (min && max) return `${min}-${max}`;
  if (min) return `${min}+`;
  if (max) return `up to ${max}`;
  return null;
}

function addressOf(v: unknown, resolve: (x: unknown) => unknown): { text: string | null; address: PostalAddress | null } {
  for (const raw of asList(v)) {
    const x = resolve(raw);
    if (typeof x === 'string' && clean(x)) return { text: clean(x), address: null };
    if (!isNode(x)) continue;
    const address: PostalAddress = {
      street: textOf(x.streetAddress),
      locality: textOf(x.addressLocality),
      region: textOf(x.addressRegion),
      postalCode: textOf(x.postalCode),
      country: textOf(resolve(x.addressCountry)),
    };
    if (Object.values(address).some(Boolean)) return { text: null, address };
  }
  return { text: null, address: null };
}

/** `"San Francisco, CA, US"`: the place, without street and postal code; the street when nothing else is known. */
export function headquartersOf(address: PostalAddress | null, text: string | null): string | null {
  if (text) return text;
  if (!address) return null;
  const place = [address.locality, address.region, address.country].filter(Boolean);
  if (place.length) return place.join(', ');
  return address.street;
}

function organizationOf(blocks: unknown[], pageUrl: string): OrganizationFacts | null {
  const { nodes, byId } = collectNodes(blocks);
  const resolve = (x: unknown): unknown => (isNode(x) && typeof x['@id'] === 'string' && Object.keys(x).length === 1 ? (byId.get(x['@id']) ?? x) : x);
  const orgs = nodes.filter((n) => typesOf(n).some((t) => ORGANIZATION_TYPES.has(t)));
  if (!orgs.length) return null;
  // The richest node describes the company; thin ones are usually a `publisher` stub.
  const org = orgs.reduce((best, n) => (Object.keys(n).length > Object.keys(best).length ? n : best));

  const emails = new Set<string>();
  const phones = new Set<string>();
  const addEmail = (v: unknown) => {
    const e = emailOf(textOf(v));
    if (e) emails.add(e);
  };
  const addPhone = (v: unknown) => {
    const p = phoneOf(textOf(v));
    if (p) phones.add(p);
  };
  addEmail(org.email);
  addPhone(org.telephone);
  for (const raw of asList(org.contactPoint)) {
    const cp = resolve(raw);
    if (!isNode(cp)) continue;
    addEmail(cp.email);
    addPhone(cp.telephone);
  }

  const people = new Map<string, PagePerson>();
  const addPerson = (raw: unknown, fallbackRole: string | null) => {
    const p = resolve(raw);
    const name = typeof p === 'string' ? clean(p) : isNode(p) ? textOf(p.name) : null;
    if (!name) return;
    const jobTitle = isNode(p) ? textOf(p.jobTitle) : null;
    const role = jobTitle ?? fallbackRole;
    if (!role) return;
    const email = isNode(p) ? emailOf(textOf(p.email)) : null;
    const known = people.get(name.toLowerCase());
    // A founder listed again as an employee with a job title: the job title says more.
    if (known && !(known.role === 'Founder' && jobTitle)) return;
    people.set(name.toLowerCase(), { name, role, ...(email ? { email } : known?.email ? { email: known.email } : {}) });
  };
  for (const f of asList(org.founder).concat(asList(org.founders))) addPerson(f, 'Founder');
  for (const e of asList(org.employee).concat(asList(org.employees), asList(org.member))) addPerson(e, null);

  const { text: addressText, address } = addressOf(org.address ?? org.location, resolve);
  const logo = org.logo === undefined ? null : absolute(isNode(resolve(org.logo)) ? textOf((resolve(org.logo) as Node).url ?? (resolve(org.logo) as Node).contentUrl) : textOf(org.logo), pageUrl);

  return {
    type: typesOf(org).find((t) => ORGANIZATION_TYPES.has(t)) ?? 'Organization',
    name: textOf(org.name),
    legalName: textOf(org.legalName),
    description: textOf(org.description),
    url: absolute(textOf(org.url), pageUrl),
    logo,
    founded: textOf(org.foundingDate),
    addressText,
    address,
    employeeCount: employeeCountOf(org.numberOfEmployees),
    sameAs: asList(org.sameAs)
      .map((s) => absolute(typeof s === 'string' ? s : null, pageUrl))
      .filter((s): s is string => s !== null),
    emails: [...emails],
    phones: [...phones],
    people: [...people.values()],
    raw: org,
  };
}

