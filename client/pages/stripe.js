// Stripe mode of the demo checkout: the card is collected by Stripe.js (so card data
// never reaches paylive) and turned into a PaymentMethod, and a 3-D Secure step that
// paylive pushes on the socket is completed here.

/** Load Stripe.js from `js` (Stripe's own, or a stand-in server's) once. */
function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load Stripe.js from ${src}`));
    document.head.append(script);
  });
}

/**
 * Mount a card field into `container`; resolves to
 * `{ paymentMethod(): Promise<string>, authenticate(clientSecret): Promise<void> }`.
 * `config` is the `stripe` part of `GET /api/checkout/config`.
 */
export async function mountStripe(config, container) {
  if (!config?.publishable_key) {
    throw new Error('PAYLIVE_STRIPE_PUBLISHABLE_KEY is not set: this page cannot collect a card');
  }
  await loadScript(config.js);
  const stripe = window.Stripe(config.publishable_key);
  const card = stripe.elements().create('card');
  card.mount(container);

  return {
    /** A PaymentMethod id for the card typed in (pm_..., or card_... from a token). */
    async paymentMethod() {
      const made = await stripe.createPaymentMethod({ type: 'card', card });
      if (made?.error) throw new Error(made.error.message ?? 'the card was refused');
      if (made?.paymentMethod) return made.paymentMethod.id;
      // localstripe's stand-in for Stripe.js makes no PaymentMethods; the card of a
      // token is one that Stripe's API takes as a payment method too.
      const { token, error } = await stripe.createToken(card);
      if (error || !token) throw new Error(error?.message ?? 'the card was refused');
      return token.card.id;
    },

    /** Complete the step the bank asks for (3-D Secure) on the PaymentIntent. */
    async authenticate(clientSecret) {
      const done = typeof stripe.handleNextAction === 'function'
        ? await stripe.handleNextAction({ clientSecret })
        : await stripe.confirmCardPayment(clientSecret);
      if (done?.error) throw new Error(done.error.message ?? 'the bank did not confirm the payment');
    },
  };
}
