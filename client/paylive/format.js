// Display helpers for pages.

/** "€19.99" from (1999, "EUR"), using the currency's own number of minor digits. */
export function formatAmount(amount, currency, locale = undefined) {
  try {
    const format = new Intl.NumberFormat(locale, { style: 'currency', currency });
    const digits = format.resolvedOptions().maximumFractionDigits;
    return format.format(amount / 10 ** digits);
  } catch {
    return `${amount} ${currency}`;
  }
}

/** "12 s" or "1.4 s": whole seconds when long, tenths when short. */
export function formatSeconds(ms) {
  if (ms == null) return '';
  const s = Math.max(0, ms) / 1000;
  // A no-break space keeps the number and its unit on one line.
  return s >= 10 ? `${Math.ceil(s)}\u00a0s` : `${s.toFixed(1)}\u00a0s`;
}
