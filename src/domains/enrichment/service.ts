/**
 * Company enrichment from sources actually read: the company's home page (its own words: title,
 * description, OpenGraph, schema.org JSON-LD, linked profiles), the MX records of its mail domain,
 * and — when a model provider is configured and the page gave facts — a model's estimate of
 * industry, size and revenue from those facts alone.
 *
 * Confidence: `confidenceScores` lists only the fields a model estimated. Facts read from the page
 * or DNS are not scored; they are what the source states, and `sourcesUsed` says where they came
 * from. A source that fails (refused address, DNS failure, timeout, provider down) is a warning,
 * never an error: the answer has what the other sources gave, and may have nothing beyond the input.
 */
import { performance } from 'node:perf_hooks';
import { z } from 'zod';
import type { AiService } from '../../platform/ai/index.ts';
import { AppError, isAppError } from '../../platform/errors.ts';
import type { HttpOut } from '../../platform/http-out/index.ts';
import { emailProviderOf, isFreeMailDomain, isLookupableDomain, lookupMx, type MxRecord, type MxResolver, systemMxResolver } from './dns.ts';
import { fetchHomePage, headquartersOf, type PageFacts, type PagePerson, parseCompanyPage, type PostalAddress } from './website.ts';

export interface EnrichmentInput {
  email?: string | null;
  domain?: string | null;
  company?: string | null;
  website?: string | null;
}

export interface EnrichedCompany {
  company: string | null;
  email: string | null;
  /** As given (website or domain), or the email's domain once its site answered. */
  website: string | null;
  /** The page that answered, after redirects. */
  websiteUrl?: string;
  industry?: string;
  employeeCount?: string;
  founded?: string;
  headquarters?: string;
  address?: PostalAddress;
  revenueRange?: string;
  keyContacts?: PagePerson[];
  description?: string;
  logo?: string;
  socialLinks?: Record<string, string>;
  contacts?: { emails: string[]; phones: string[] };
  emailProvider?: string;
  mxRecords?: MxRecord[];
}

export type ScoredField = 'industry' | 'employeeCount' | 'revenueRange';

export interface EnrichmentWarning {
  /** `company_website`, `json_ld`, `dns_mx` or `ai_inference`. */
  source: string;
  /** Stable reason, e.g. `address_not_allowed`, `dns_failed`, `timeout`, `no_mx_records`. */
  reason: string;
  message: string;
}

export interface EnrichmentResult {
  data: EnrichedCompany;
  /** Model-estimated fields only, 0..1. */
  confidenceScores: Partial<Record<ScoredField, number>>;
  /** `company_website`, `json_ld`, `opengraph`, `dns_mx`, `ai_inference:<provider>/<model>`: only sources that contributed. */
  sourcesUsed: string[];
  warnings: EnrichmentWarning[];
  /** Wall time of the whole enrichment, in seconds. */
  processingSeconds: number;
}

export interface EnrichmentDeps {
  outbound: HttpOut;
  ai: AiService;
  /** MX lookups; the system resolver when omitted. */
  resolveMx?: MxResolver;
}

/** What the model is asked for; `null` when the facts do not support an estimate. */
export const inferenceSchema = z.object({
  industry: z.string().min(1).max(120).nullable(),
  industry_confidence: z.number().min(0).max(1),
  employee_range: z.string().min(1).max(40).nullable(),
  employee_confidence: z.number().min(0).max(1),
  revenue_range: z.string().min(1).max(40).nullable(),
  revenue_confidence: z.number().min(0).max(1),
});

/** Largest facts summary shown to the model, in characters. */
const FACTS_CHARS = 4000;

const INFERENCE_PROMPT = [
  'You estimate a company profile from facts read from its own website.',
  'Use only the facts given; do not use outside knowledge about a company of that name.',
  'Return industry as a short label (e.g. "Industrial Automation"), employee_range as one of',
  '"1-10", "11-50", "51-200", "201-500", "501-1000", "1001-5000", "5001-10000", "10000+",',
  'and revenue_range in US dollars such as "$1M-$10M" or "$10M-$50M".',
  'Each confidence is between 0 and 1 and says how strongly the facts support the value.',
  'When the facts do not support a value, return null for it with confidence 0.',
].join(' ');

const HOST = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/i;
const IPV4 = /^(\d{1,3}\.){3}\d{1,3}$/;

/** A site to read: the addresses to try in order, its host name, and the value as the caller gave it. */
export interface WebsiteTarget {
  candidates: string[];
  hostname: string;
  display: string;
}

/**
 * The site named by `value`: a full http(s) URL is fetched as it is; a bare host (with an optional
 * port or path) over https first, then http. VALIDATION_ERROR for anything else.
 */
export function websiteTarget(value: string, field: string): WebsiteTarget {
  const v = value.trim();
  const hasScheme = /^[a-z][a-z0-9+.-]*:/i.test(v) && !/^[^/]+:\d+(\/|$)/.test(v);
  let u: URL;
  try {
    u = new URL(hasScheme ? v : `https://${v}`);
  } catch {
    throw new AppError('VALIDATION_ERROR', `${field} is not a valid domain or URL`, { details: { field, value } });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new AppError('VALIDATION_ERROR', `${field} must be a domain name or an http(s) URL`, { details: { field, value } });
  }
  const hostname = u.hostname.toLowerCase();
  if (!HOST.test(hostname) && !IPV4.test(hostname) && !hostname.startsWith('[')) {
    throw new AppError('VALIDATION_ERROR', `${field} must be a domain name such as example.com, or an http(s) URL`, { details: { field, value } });
  }
  if (u.username || u.password) throw new AppError('VALIDATION_ERROR', `${field} must not carry credentials`, { details: { field } });
  u.hash = '';
  if (hasScheme) return { candidates: [u.toString()], hostname, display: v };
  const http = new URL(u);
  http.protocol = 'http:';
  return { candidates: [u.toString(), http.toString()], hostname, display: v };
}

const round2 = (n: number) => Math.round(n * 100) / 100;

export class EnrichmentService {
  private readonly outbound: HttpOut;
  private readonly ai: AiService;
  private readonly resolveMx: MxResolver;

  constructor(deps: EnrichmentDeps) {
    this.outbound = deps.outbound;
    this.ai = deps.ai;
    this.resolveMx = deps.resolveMx ?? systemMxResolver();
  }

  /** Enriches what the caller knows (at least one of email, domain, company, website). */
  async enrich(userId: string, input: EnrichmentInput, signal?: AbortSignal): Promise<EnrichmentResult> {
    const started = performance.now();
    const email = input.email?.trim().toLowerCase() || null;
    const company = input.company?.trim() || null;
    if (!email && !company && !input.domain?.trim() && !input.website?.trim()) {
      throw new AppError('VALIDATION_ERROR', 'Give at least one of email, domain, company or website', { details: { field: 'body' } });
    }
    const emailDomain = email ? (email.split('@')[1] ?? null) : null;
    const companyEmailDomain = emailDomain && !isFreeMailDomain(emailDomain) ? emailDomain : null;
    const given = !!(input.website?.trim() || input.domain?.trim());
    const target = input.website?.trim()
      ? websiteTarget(input.website, 'website')
      : input.domain?.trim()
        ? websiteTarget(input.domain, 'domain')
        : companyEmailDomain
          ? websiteTarget(companyEmailDomain, 'email')
          : null;
    const siteDomain = target ? target.hostname.replace(/^www\./, '') : null;
    const mxDomain = [companyEmailDomain, siteDomain].find((d): d is string => !!d && isLookupableDomain(d)) ?? null;

    const warnings: EnrichmentWarning[] = [];
    const sources: string[] = [];
    if (!target && !mxDomain) {
      const why = emailDomain && isFreeMailDomain(emailDomain) ? `${emailDomain} is a free-mail provider, not a company domain` : 'company names are not looked up';
      warnings.push({ source: 'input', reason: 'nothing_to_read', message: `No website or domain to read (${why}); give website or domain` });
    }
    const [page, mx] = await Promise.all([
      target ? this.readSite(target.candidates, warnings, signal) : Promise.resolve(null),
      mxDomain ? this.readMx(mxDomain, warnings) : Promise.resolve(null),
    ]);

    const data: EnrichedCompany = { company, email, website: null };
    // A site taken from the email's domain is reported only once it answered.
    if (target && (given || page)) data.website = target.display;
    if (page) this.applyPage(page, data, sources, warnings);
    if (mx?.length) {
      data.mxRecords = mx;
      const provider = emailProviderOf(mx);
      if (provider) data.emailProvider = provider;
      sources.push('dns_mx');
    }

    const confidenceScores: EnrichmentResult['confidenceScores'] = {};
    if (page && this.ai.providers.configured().length > 0) {
      await this.infer(userId, page, data, confidenceScores, sources, warnings, signal);
    }

    // Rounded up, so a fast run never reads as zero seconds.
    const processingSeconds = Math.max(0.01, Math.ceil(((performance.now() - started) / 1000) * 100) / 100);
    return { data, confidenceScores, sourcesUsed: sources, warnings, processingSeconds };
  }

  private async readSite(candidates: string[], warnings: EnrichmentWarning[], signal?: AbortSignal): Promise<PageFacts | null> {
    const fetched = await fetchHomePage(this.outbound, candidates, signal);
    if (!fetched.ok) {
      warnings.push({ source: 'company_website', reason: fetched.reason, message: fetched.message });
      return null;
    }
    return parseCompanyPage(fetched.html, fetched.url);
  }

  private async readMx(domain: string, warnings: EnrichmentWarning[]): Promise<MxRecord[] | null> {
    try {
      const records = (await lookupMx(this.resolveMx, domain)).filter((r) => r.exchange && r.exchange !== '.');
      if (!records.length) warnings.push({ source: 'dns_mx', reason: 'no_mx_records', message: `${domain} has no MX records` });
      return records;
    } catch (err) {
      const code = (err as { code?: string }).code;
      const none = code === 'ENOTFOUND' || code === 'ENODATA' || code === 'NXDOMAIN';
      warnings.push({
        source: 'dns_mx',
        reason: none ? 'no_mx_records' : code === 'ETIMEOUT' || code === 'ETIMEDOUT' ? 'timeout' : 'dns_failed',
        message: none ? `${domain} has no MX records` : `MX lookup of ${domain} failed: ${(err as Error).message}`,
      });
      return null;
    }
  }

  /** Copies what the page states into `data`, recording which parts of the page contributed. */
  private applyPage(page: PageFacts, data: EnrichedCompany, sources: string[], warnings: EnrichmentWarning[]): void {
    const org = page.organization;
    const og = page.opengraph;
    let fromOg = false;
    let fromLd = false;
    data.websiteUrl = page.url;

    if (!data.company) {
      if (org?.name) [data.company, fromLd] = [org.name, true];
      else if (og.siteName) [data.company, fromOg] = [og.siteName, true];
    }
    if (page.description) data.description = page.description;
    else if (og.description) [data.description, fromOg] = [og.description, true];
    else if (org?.description) [data.description, fromLd] = [org.description, true];
    if (org?.logo) [data.logo, fromLd] = [org.logo, true];
    else if (og.image) [data.logo, fromOg] = [og.image, true];

    if (org) {
      if (org.founded) [data.founded, fromLd] = [org.founded, true];
      const hq = headquartersOf(org.address, org.addressText);
      if (hq) [data.headquarters, fromLd] = [hq, true];
      if (org.address) data.address = org.address;
      if (org.employeeCount) [data.employeeCount, fromLd] = [org.employeeCount, true];
      if (org.people.length) [data.keyContacts, fromLd] = [org.people, true];
    }

    const social: Record<string, string> = {};
    for (const url of org?.sameAs ?? []) {
      const host = new URL(url).hostname.replace(/^www\./, '');
      const known = SOCIAL_KEYS.find(([, hosts]) => hosts.some((h) => host === h || host.endsWith(`.${h}`)));
      social[known?.[0] ?? host] ??= url;
      fromLd = true;
    }
    for (const [platform, url] of Object.entries(page.socialLinks)) {
      social[platform] ??= url;
    }
    if (Object.keys(social).length) data.socialLinks = social;

    const emails = [...new Set([...(org?.emails ?? []), ...page.emails])];
    const phones = [...new Set([...(org?.phones ?? []), ...page.phones])];
    if (org?.emails.length || org?.phones.length) fromLd = true;
    if (emails.length || phones.length) data.contacts = { emails, phones };

    // The page answered and was read: even a bare title is what the model's estimate starts from.
    sources.push('company_website');
    if (fromLd) sources.push('json_ld');
    if (fromOg) sources.push('opengraph');
    if (page.invalidJsonLd) {
      warnings.push({ source: 'json_ld', reason: 'invalid_json', message: `${page.invalidJsonLd} JSON-LD block(s) on ${page.url} are not valid JSON and were skipped` });
    }
  }

  /** The model's estimate from the page's facts; fields already read from the page are kept. */
  private async infer(
    userId: string,
    page: PageFacts,
    data: EnrichedCompany,
    scores: EnrichmentResult['confidenceScores'],
    sources: string[],
    warnings: EnrichmentWarning[],
    signal?: AbortSignal,
  ): Promise<void> {
    const facts = factsSummary(page, data);
    if (!facts) return;
    try {
      const r = await this.ai.object(
        [
          { role: 'system', content: INFERENCE_PROMPT },
          { role: 'user', content: `Facts read from the company's website:\n${facts}` },
        ],
        inferenceSchema,
        { userId, purpose: 'helomatic.enrich', temperature: 0, signal, name: 'company_profile' },
      );
      const o = r.object;
      let used = false;
      if (o.industry && o.industry_confidence > 0) {
        data.industry = o.industry;
        scores.industry = round2(o.industry_confidence);
        used = true;
      }
      if (!data.employeeCount && o.employee_range && o.employee_confidence > 0) {
        data.employeeCount = o.employee_range;
        scores.employeeCount = round2(o.employee_confidence);
        used = true;
      }
      if (o.revenue_range && o.revenue_confidence > 0) {
        data.revenueRange = o.revenue_range;
        scores.revenueRange = round2(o.revenue_confidence);
        used = true;
      }
      if (used) sources.push(`ai_inference:${r.provider}/${r.model}`);
    } catch (err) {
      if (!isAppError(err)) throw err;
      warnings.push({ source: 'ai_inference', reason: String((err.details as { reason?: string } | undefined)?.reason ?? err.code).toLowerCase(), message: err.message });
    }
  }
}

// sameAs URLs on these hosts are keyed by platform, like the page's own profile links.
const SOCIAL_KEYS: [string, string[]][] = [
  ['linkedin', ['linkedin.com']],
  ['twitter', ['twitter.com', 'x.com']],
  ['facebook', ['facebook.com', 'fb.com']],
  ['github', ['github.com']],
  ['instagram', ['instagram.com']],
  ['youtube', ['youtube.com', 'youtu.be']],
];

/** The page's facts as compact JSON for the model (≤ 4k characters); null when the page stated nothing useful. */
export function factsSummary(page: PageFacts, data: EnrichedCompany): string | null {
  const org = page.organization;
  const ld: Record<string, unknown> = {};
  if (org) {
    for (const [k, v] of Object.entries(org.raw)) {
      if (k.startsWith('@') || k === 'logo' || k === 'image' || k === 'sameAs' || k === 'contactPoint') continue;
      ld[k] = v;
    }
  }
  const facts: Record<string, unknown> = {
    company_name: data.company,
    website: page.url,
    page_title: page.title,
    meta_description: page.description,
    opengraph_title: page.opengraph.title,
    opengraph_description: page.opengraph.description,
    founded: data.founded,
    headquarters: data.headquarters,
    employee_count: data.employeeCount,
    schema_org_type: org?.type,
    schema_org: Object.keys(ld).length ? ld : undefined,
  };
  const meaningful = [page.title, page.description, page.opengraph.description, page.opengraph.title, org ? 'ld' : null].some(Boolean);
  if (!meaningful) return null;
  const json = JSON.stringify(facts);
  return json.length > FACTS_CHARS ? `${json.slice(0, FACTS_CHARS)}…` : json;
}
