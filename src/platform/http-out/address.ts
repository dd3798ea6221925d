/**
 * Address policy for outbound requests: which IP addresses a user-supplied URL may reach.
 *
 * Everything that is not ordinary public unicast is refused unless the operator allows it:
 * loopback, private and link-local ranges, cloud metadata endpoints, multicast, reserved and
 * documentation blocks, and the IPv6 forms that embed an IPv4 address (mapped, compatible,
 * translated, NAT64, 6to4), which are judged by the IPv4 address they carry. The arithmetic is
 * done here on BigInts so every rule is visible in one table.
 */
import { isIPv4, isIPv6 } from 'node:net';

/** An IP address as a number: 32 bits for IPv4, 128 bits for IPv6. */
export interface IpAddress {
  family: 4 | 6;
  value: bigint;
}

/** A network range such as `10.0.0.0/8` (host bits cleared). */
export interface Cidr {
  family: 4 | 6;
  base: bigint;
  prefix: number;
  /** The range as written by the operator, for messages. */
  text: string;
}

/**
 * Which non-public addresses the operator lets outbound requests reach: `all` for local testing,
 * otherwise only the listed ranges (empty list = none).
 */
export interface AllowPrivate {
  readonly all: boolean;
  readonly ranges: readonly Cidr[];
}

/** The default policy: no private address is reachable. */
export const ALLOW_NO_PRIVATE: AllowPrivate = Object.freeze({ all: false, ranges: Object.freeze([]) });

/** The verdict on one address; `category` says why it was refused (e.g. `loopback`). */
export type AddressVerdict = { allowed: true } | { allowed: false; category: string };

const BITS = { 4: 32, 6: 128 } as const;

/** Parses a strict dotted-quad IPv4 address (what WHATWG URL and the resolver produce). */
function parseIpv4(text: string): bigint | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let value = 0n;
  for (const part of parts) {
    // Leading zeros are refused: some parsers read them as octal, so they are ambiguous.
    if (!/^(0|[1-9]\d{0,2})$/.test(part)) return null;
    const n = Number(part);
    if (n > 255) return null;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

/** Parses an IPv6 address, with or without brackets, an embedded dotted quad or a zone id. */
function parseIpv6(text: string): bigint | null {
  let s = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  // A zone id (`fe80::1%eth0`) names an interface, not part of the address.
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  if (!isIPv6(s)) return null;
  const lastColon = s.lastIndexOf(':');
  const tail = s.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = parseIpv4(tail);
    if (v4 === null) return null;
    s = `${s.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const head = halves[0] ? halves[0].split(':') : [];
  const rest = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  const missing = 8 - head.length - rest.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...rest];
  let value = 0n;
  for (const g of groups) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
    value = (value << 16n) | BigInt(parseInt(g, 16));
  }
  return value;
}

/** Parses an IPv4 or IPv6 address; null when `text` is not one. */
export function parseIp(text: string): IpAddress | null {
  if (isIPv4(text)) {
    const v = parseIpv4(text);
    return v === null ? null : { family: 4, value: v };
  }
  const v6 = parseIpv6(text);
  return v6 === null ? null : { family: 6, value: v6 };
}

function cidr(text: string): Cidr {
  const parsed = parseCidr(text);
  if (!parsed) throw new Error(`bad built-in range ${text}`);
  return parsed;
}

/** Parses `address/prefix` (a bare address means a single host); null when malformed. */
export function parseCidr(text: string): Cidr | null {
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const ip = parseIp(addrText);
  if (!ip || addrText.includes('%')) return null;
  const bits = BITS[ip.family];
  let prefix: number = bits;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return null;
    prefix = Number(p);
    if (prefix > bits) return null;
  }
  return { family: ip.family, base: mask(ip.value, prefix, bits), prefix, text };
}

function mask(value: bigint, prefix: number, bits: number): bigint {
  const hostBits = BigInt(bits - prefix);
  return (value >> hostBits) << hostBits;
}

/** True when `ip` lies inside `range`. */
export function cidrContains(range: Cidr, ip: IpAddress): boolean {
  return range.family === ip.family && mask(ip.value, range.prefix, BITS[ip.family]) === range.base;
}

type Rule = [range: Cidr, category: string];
const rules = (list: [string, string][]): Rule[] => list.map(([r, c]) => [cidr(r), c]);

// Cloud instance metadata endpoints (AWS, GCP, Azure, Oracle, Alibaba; ECS/EKS credential
// endpoints). They hand out credentials, so a broad allowed range never opens them by accident.
const METADATA = rules([
  ['169.254.169.254/32', 'cloud metadata'],
  ['169.254.170.2/32', 'cloud metadata'],
  ['169.254.170.23/32', 'cloud metadata'],
  ['100.100.100.200/32', 'cloud metadata'],
  ['fd00:ec2::254/128', 'cloud metadata'],
  ['fd00:ec2::23/128', 'cloud metadata'],
]);

// IANA IPv4 special-purpose registry, most specific first.
const IPV4_BLOCKED = rules([
  ['255.255.255.255/32', 'broadcast'],
  ['0.0.0.0/8', 'unspecified'],
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'carrier-grade NAT'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'IETF protocol assignment'],
  ['192.0.2.0/24', 'documentation'],
  ['192.88.99.0/24', '6to4 relay'],
  ['192.168.0.0/16', 'private'],
  ['198.18.0.0/15', 'benchmarking'],
  ['198.51.100.0/24', 'documentation'],
  ['203.0.113.0/24', 'documentation'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved'],
]);

const IPV6_EXACT = rules([
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
]);

// IPv6 forms that carry an IPv4 address; the IPv4 address decides. [range, name, shift of the IPv4 bits]
const IPV6_EMBEDDING: [Cidr, string, bigint][] = [
  [cidr('::ffff:0:0/96'), 'IPv4-mapped', 0n],
  [cidr('::ffff:0:0:0/96'), 'IPv4-translated', 0n],
  [cidr('::/96'), 'IPv4-compatible', 0n],
  [cidr('64:ff9b::/96'), 'NAT64', 0n],
  [cidr('2002::/16'), '6to4', 80n],
];

const IPV6_BLOCKED = rules([
  ['64:ff9b:1::/48', 'NAT64 local-use'],
  ['100::/64', 'discard-only'],
  ['2001::/32', 'Teredo'],
  ['2001:db8::/32', 'documentation'],
  // Benchmarking, ORCHID and other protocol assignments.
  ['2001::/23', 'IETF protocol assignment'],
  ['3fff::/20', 'documentation'],
  ['fc00::/7', 'unique-local'],
  ['fe80::/10', 'link-local'],
  ['fec0::/10', 'site-local'],
  ['ff00::/8', 'multicast'],
]);

// Only global unicast is routable on the public internet; anything else left over is reserved.
const IPV6_GLOBAL_UNICAST = cidr('2000::/3');

function match(list: Rule[], ip: IpAddress): string | null {
  for (const [range, category] of list) if (cidrContains(range, ip)) return category;
  return null;
}

/** The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4), if any. */
function embeddedIpv4(ip: IpAddress): { kind: string; ip: IpAddress } | null {
  if (ip.family !== 6) return null;
  for (const [range, kind, shift] of IPV6_EMBEDDING) {
    if (cidrContains(range, ip)) return { kind, ip: { family: 4, value: (ip.value >> shift) & 0xffffffffn } };
  }
  return null;
}

/** An IPv4-mapped IPv6 address is that IPv4 address on the wire; everything else is itself. */
function effective(ip: IpAddress): IpAddress {
  const inner = embeddedIpv4(ip);
  return inner?.kind === 'IPv4-mapped' ? inner.ip : ip;
}

/** Why `ip` is not a public address (e.g. `loopback`, `IPv4-mapped private`), or null when it is public. */
export function blockedCategory(ip: IpAddress): string | null {
  const metadata = match(METADATA, effective(ip));
  if (metadata) return metadata;
  if (ip.family === 4) return match(IPV4_BLOCKED, ip);
  const exact = match(IPV6_EXACT, ip);
  if (exact) return exact;
  const inner = embeddedIpv4(ip);
  if (inner) {
    const category = blockedCategory(inner.ip);
    return category ? `${inner.kind} ${category}` : null;
  }
  const special = match(IPV6_BLOCKED, ip);
  if (special) return special;
  return cidrContains(IPV6_GLOBAL_UNICAST, ip) ? null : 'reserved';
}

/** Decides whether an outbound connection may go to `address` under the operator's policy. */
export function checkAddress(address: string, allow: AllowPrivate = ALLOW_NO_PRIVATE): AddressVerdict {
  const ip = parseIp(address);
  if (!ip) return { allowed: false, category: 'unrecognised' };
  if (allow.all) return { allowed: true };
  const category = blockedCategory(ip);
  if (!category) return { allowed: true };
  const target = effective(ip);
  const isMetadata = match(METADATA, target) !== null;
  for (const range of allow.ranges) {
    if (!cidrContains(range, target)) continue;
    // A metadata endpoint is opened only by naming it exactly, never by a wider range around it.
    if (isMetadata && range.prefix !== BITS[range.family]) continue;
    return { allowed: true };
  }
  return { allowed: false, category };
}

/**
 * Parses the operator's setting: empty → no private address allowed; `true` → every address
 * (local testing only); otherwise comma-separated CIDRs (IPv4 or IPv6, a bare address = one host).
 */
export function parseAllowPrivate(value: string | undefined): AllowPrivate {
  const trimmed = (value ?? '').trim();
  if (trimmed === '' || trimmed.toLowerCase() === 'false') return ALLOW_NO_PRIVATE;
  if (trimmed.toLowerCase() === 'true') return Object.freeze({ all: true, ranges: Object.freeze([]) });
  const ranges: Cidr[] = [];
  for (const entry of trimmed.split(',').map((s) => s.trim())) {
    if (entry === '') continue;
    const range = parseCidr(entry);
    if (!range) throw new Error(`"${entry}" is not a valid CIDR range (expected e.g. 10.0.0.0/8 or fd00::/8, or "true")`);
    ranges.push(range);
  }
  return Object.freeze({ all: false, ranges: Object.freeze(ranges) });
}
