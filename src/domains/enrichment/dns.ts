/**
 * Mail exchangers of a domain and who runs them. The lookup is a plain function so tests (and any
 * deployment with its own resolver) can supply answers; production asks the system's DNS servers.
 */
import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';

export interface MxRecord {
  exchange: string;
  priority: number;
}

/** Answers the MX records of `domain`; rejects (e.g. ENOTFOUND, ENODATA) when there are none. */
export type MxResolver = (domain: string) => Promise<MxRecord[]>;

const DNS_TIMEOUT_MS = 3000;

/** MX lookup through the system's DNS servers, at most ~3 s per try and two tries. */
export function systemMxResolver(): MxResolver {
  const resolver = new Resolver({ timeout: DNS_TIMEOUT_MS, tries: 2 });
  return (domain) => resolver.resolveMx(domain);
}

/**
 * Mailbox providers for the public: an address there says nothing about the person's company, so
 * its domain is neither fetched as a company website nor looked up for MX.
 */
export const FREE_MAIL_DOMAINS: ReadonlySet<string> = new Set([
  'gmail.com',
  'googlemail.com',
  'outlook.com',
  'hotmail.com',
  'hotmail.co.uk',
  'live.com',
  'msn.com',
  'yahoo.com',
  'yahoo.co.uk',
  'yahoo.fr',
  'ymail.com',
  'aol.com',
  'icloud.com',
  'me.com',
  'mac.com',
  'proton.me',
  'protonmail.com',
  'pm.me',
  'gmx.com',
  'gmx.de',
  'gmx.net',
  'web.de',
  'mail.com',
  'zoho.com',
  'yandex.com',
  'yandex.ru',
  'mail.ru',
  'qq.com',
  '163.com',
  'fastmail.com',
  'hey.com',
  'tutanota.com',
]);

/** True for the free-mail providers above. */
export function isFreeMailDomain(domain: string): boolean {
  return FREE_MAIL_DOMAINS.has(domain.toLowerCase());
}

/** True when `host` can have MX records at all (not an IP address, not a local name). */
export function isLookupableDomain(host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  if (!h || isIP(h.replace(/^\[|\]$/g, '')) !== 0) return false;
  if (h === 'localhost' || h.endsWith('.localhost') || !h.includes('.')) return false;
  return true;
}

// Known mail hosts by the suffix of their exchanger name.
const PROVIDERS: { suffix: string; name: string }[] = [
  { suffix: 'google.com', name: 'Google Workspace' },
  { suffix: 'googlemail.com', name: 'Google Workspace' },
  { suffix: 'protection.outlook.com', name: 'Microsoft 365' },
  { suffix: 'outlook.com', name: 'Microsoft 365' },
  { suffix: 'zoho.com', name: 'Zoho Mail' },
  { suffix: 'zoho.eu', name: 'Zoho Mail' },
  { suffix: 'zoho.in', name: 'Zoho Mail' },
  { suffix: 'protonmail.ch', name: 'Proton Mail' },
  { suffix: 'messagingengine.com', name: 'Fastmail' },
  { suffix: 'pphosted.com', name: 'Proofpoint' },
  { suffix: 'mimecast.com', name: 'Mimecast' },
  { suffix: 'secureserver.net', name: 'GoDaddy' },
  { suffix: 'amazonaws.com', name: 'Amazon SES' },
  { suffix: 'icloud.com', name: 'iCloud Mail' },
  { suffix: 'yandex.net', name: 'Yandex Mail' },
];

/** Who runs the mail of a domain with these MX records: a known provider's name, else the preferred exchanger's host. */
export function emailProviderOf(records: MxRecord[]): string | null {
  const sorted = [...records].sort((a, b) => a.priority - b.priority);
  for (const r of sorted) {
    const host = r.exchange.toLowerCase().replace(/\.$/, '');
    const known = PROVIDERS.find((p) => host === p.suffix || host.endsWith(`.${p.suffix}`));
    if (known) return known.name;
  }
  const first = sorted[0]?.exchange.replace(/\.$/, '');
  return first || null;
}

/** The MX lookup with its own deadline, whatever the resolver does. */
export async function lookupMx(resolve: MxResolver, domain: string, timeoutMs = 2 * DNS_TIMEOUT_MS + 500): Promise<MxRecord[]> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`DNS lookup of ${domain} timed out`), { code: 'ETIMEOUT' })), timeoutMs);
  });
  try {
    const records = await Promise.race([resolve(domain), deadline]);
    return [...records].sort((a, b) => a.priority - b.priority || a.exchange.localeCompare(b.exchange));
  } finally {
    clearTimeout(timer);
  }
}
