import { BlockList, isIPv4, isIPv6 } from 'node:net';
import { invalid } from './errors.js';

/** Most CIDRs one site's allowlist holds. */
export const MAX_ALLOW_CIDRS = 256;

/**
 * One allowlist entry, checked, in the form it is stored: "10.0.0.0/8", "2001:db8::/32"; a bare
 * address is one host (/32, /128). Zone ids ("fe80::1%eth0") mean nothing off the machine and
 * are refused.
 */
export function canonicalCidr(text: string, field: string): string {
  const [address = '', prefixText, extra] = text.trim().split('/');
  const family = isIPv4(address) ? 'ipv4' : isIPv6(address) && !address.includes('%') ? 'ipv6' : null;
  if (family === null || extra !== undefined) throw invalid(field, `"${text}" is not an address range like 10.0.0.0/8 or 2001:db8::/32`);
  const max = family === 'ipv4' ? 32 : 128;
  const prefix = prefixText === undefined ? max : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= max)) throw invalid(field, `"${text}": the prefix length must be a whole number from 0 to ${max}`);
  return `${family === 'ipv6' ? address.toLowerCase() : address}/${prefix}`;
}

/** A whole allowlist checked (each entry named by its index under `field`), duplicates dropped. */
export function checkCidrs(list: readonly string[], field: string): string[] {
  if (list.length > MAX_ALLOW_CIDRS) throw invalid(field, `at most ${MAX_ALLOW_CIDRS} entries`);
  return [...new Set(list.map((c, i) => canonicalCidr(c, `${field}/${i}`)))];
}

/**
 * Which client addresses a site admits. Node's BlockList matches IPv4 and IPv6 ranges, and an
 * IPv4 client seen on a dual-stack socket as "::ffff:10.1.2.3" matches "10.0.0.0/8" too.
 * An empty list admits every address.
 */
export class AddressAllowlist {
  private readonly list: BlockList | null;

  constructor(readonly cidrs: readonly string[]) {
    if (cidrs.length === 0) {
      this.list = null;
      return;
    }
    this.list = new BlockList();
    for (const c of cidrs) {
      const [address, prefix] = c.split('/') as [string, string];
      this.list.addSubnet(address, Number(prefix), isIPv4(address) ? 'ipv4' : 'ipv6');
    }
  }

  allows(address: string | undefined): boolean {
    if (this.list === null) return true;
    if (address === undefined) return false;
    if (isIPv4(address)) return this.list.check(address, 'ipv4');
    return isIPv6(address) && this.list.check(address, 'ipv6');
  }
}
