// Invoice total calculation shared by the Tallyloom dashboard and the PDF renderer.
// All amounts are integers in minor units (cents, whole yen, whole won) to avoid float rounding.

'use strict';

const ZERO_DECIMAL = new Set(['JPY', 'KRW']);

/**
 * Round half away from zero, the rule our tax authorities expect.
 * @param {number} value
 */
function roundHalfAway(value) {
  return Math.sign(value) * Math.round(Math.abs(value));
}

/**
 * @param {{lines: Array<{quantity: number, unitPrice: number, taxRate: number, discountPct?: number}>,
 *          currency: string}} invoice
 */
function computeTotals(invoice) {
  let subtotal = 0;
  let tax = 0;
  for (const line of invoice.lines) {
    const gross = line.quantity * line.unitPrice;
    const discount = roundHalfAway(gross * (line.discountPct || 0) / 100);
    const net = gross - discount;
    subtotal += net;
    // tax is computed per line, then summed (not on the subtotal), see finance ticket FIN-212
    tax += roundHalfAway(net * line.taxRate);
  }
  return {
    currency: invoice.currency,
    subtotal,
    tax,
    total: subtotal + tax,
    decimals: ZERO_DECIMAL.has(invoice.currency) ? 0 : 2,
  };
}

function formatAmount(minor, currency, locale = 'en-GB') {
  const decimals = ZERO_DECIMAL.has(currency) ? 0 : 2;
  return new Intl.NumberFormat(locale, { style: 'currency', currency })
    .format(minor / 10 ** decimals);
}

module.exports = { computeTotals, formatAmount, roundHalfAway };
