/*
 * DEVELOPMENT AND TESTS ONLY: what localstripe's fake Stripe.js lacks, taught to it.
 *
 * The project's localstripe launcher (scripts/localstripe_server.py) serves this appended to
 * localstripe's own fake Stripe.js at /js.stripe.com/v3/, so a page that loads "Stripe.js" from
 * the stand-in gets both in one script; the billing app knows nothing of it, and production loads
 * the real Stripe.js, which needs no help.
 *
 * localstripe 1.15's fake Stripe.js has a card Element (plain inputs it keeps in
 * `element._inputs`) but an empty createPaymentMethod stub. This fills the stub the way the
 * real one behaves: it POSTs the card fields to localstripe's /v1/payment_methods with the
 * publishable key (the launcher lets that key through, as real Stripe does) and answers
 * {paymentMethod} or {error: {message}}. It also labels and lays out the fake inputs for people
 * (styles set from script: the page's CSP allows no inline style attributes, and the real
 * Element is an iframe that brings its own) and adds the focus()/clear() methods a real Element has.
 */
(function () {
  "use strict";

  const fakeStripe = window.Stripe;
  if (typeof fakeStripe !== "function") {
    console.warn("localstripe-adapter: Stripe.js is not loaded; nothing to adapt.");
    return;
  }
  // Defined at the top of localstripe's fake Stripe.js, this script's first half.
  const apiBase = typeof LOCALSTRIPE_BASE_API === "string" ? LOCALSTRIPE_BASE_API : "";

  function styled(node, styles) {
    if (node) Object.assign(node.style, styles);
  }

  const FIELDS = {
    number: { label: "Card number", placeholder: "Card number", autocomplete: "cc-number", max: 16, digits: true },
    exp_month: { label: "Expiry month", placeholder: "MM", autocomplete: "cc-exp-month", max: 2, digits: true },
    exp_year: { label: "Expiry year", placeholder: "YY", autocomplete: "cc-exp-year", max: 2, digits: true },
    cvc: { label: "Security code", placeholder: "CVC", autocomplete: "cc-csc", max: 3, digits: true },
    postal_code: { label: "Postal code", placeholder: "ZIP", autocomplete: "postal-code", max: 10, digits: false },
  };

  function labelInputs(element, mountPoint) {
    const target = typeof mountPoint === "string" ? document.querySelector(mountPoint) : mountPoint;
    if (target) target.classList.add("localstripe-card");
    styled(target, { display: "flex", flexWrap: "wrap", gap: ".4rem", alignItems: "center", padding: ".6rem" });
    const caption = target && target.querySelector("span");
    if (caption) {
      caption.textContent = "Test card (localstripe)";
      caption.className = "localstripe-caption";
      styled(caption, {
        flexBasis: "100%", fontSize: ".75rem", color: "#b54708", textTransform: "uppercase", letterSpacing: ".05em",
      });
    }
    Object.keys(FIELDS).forEach((name) => {
      const input = element._inputs && element._inputs[name];
      if (!input) return;
      const field = FIELDS[name];
      input.dataset.field = name;
      input.setAttribute("aria-label", field.label);
      input.setAttribute("placeholder", field.placeholder);
      input.setAttribute("autocomplete", field.autocomplete);
      input.setAttribute("size", String(Math.min(field.max, 16)));
      styled(input, {
        width: "auto", minWidth: "0", flex: name === "number" ? "1 1 100%" : "1 1 3.2rem", padding: ".45rem .55rem",
        border: "1px solid #d0d5dd", borderRadius: "6px", font: "inherit", fontVariantNumeric: "tabular-nums",
      });
      if (!field.digits) return;
      input.setAttribute("inputmode", "numeric");
      // The fake moves focus on once a field looks full: keep only digits (so "4242 4242 ..."
      // typed with spaces fills the number, not the month), before its own handler runs.
      const fakeHandler = input.oninput;
      input.oninput = function (event) {
        input.value = input.value.replace(/\D/g, "").slice(0, field.max);
        if (fakeHandler) fakeHandler.call(input, event);
      };
    });
  }

  function withElementMethods(element) {
    const mount = element.mount;
    element.mount = function (mountPoint) {
      mount.call(element, mountPoint);
      labelInputs(element, mountPoint);
    };
    element.focus = function () {
      if (element._inputs) element._inputs.number.focus();
    };
    element.clear = function () {
      if (!element._inputs) return;
      Object.values(element._inputs).forEach((input) => {
        input.value = "";
      });
      element.value = undefined;
    };
    return element;
  }

  function invalid(message) {
    return { error: { type: "validation_error", message: message } };
  }

  // The card fields as Stripe's API wants them, or the message real Stripe.js would show.
  function readCard(element) {
    const inputs = element && element._inputs;
    if (!inputs) return invalid("The card form is not ready yet.");
    const number = inputs.number.value.replace(/[\s-]/g, "");
    const month = inputs.exp_month.value.trim();
    let year = inputs.exp_year.value.trim();
    const cvc = inputs.cvc.value.trim();
    if (!/^\d{16}$/.test(number)) return invalid("Your card number is incomplete.");
    if (!/^\d{1,2}$/.test(month) || Number(month) < 1 || Number(month) > 12) {
      return invalid("Your card's expiration month is invalid.");
    }
    if (/^\d{2}$/.test(year)) year = "20" + year;
    if (!/^\d{4}$/.test(year)) return invalid("Your card's expiration date is incomplete.");
    const now = new Date();
    const expiry = Number(year) * 12 + Number(month);
    if (expiry < now.getFullYear() * 12 + now.getMonth() + 1) return invalid("Your card's expiration date is in the past.");
    if (!/^\d{3}$/.test(cvc)) return invalid("Your card's security code is incomplete.");
    return { card: { number: number, exp_month: month, exp_year: year, cvc: cvc }, postalCode: inputs.postal_code.value.trim() };
  }

  async function createPaymentMethod(publishableKey, options, legacyElement, legacyData) {
    // Both call styles of Stripe.js: ({type, card, billing_details}) and ("card", element, data).
    const element = typeof options === "string" ? legacyElement : options && options.card;
    const billing = (typeof options === "string" ? legacyData && legacyData.billing_details : options.billing_details) || {};
    const read = readCard(element);
    if (read.error) return read;

    const body = new URLSearchParams();
    body.set("type", "card");
    Object.keys(read.card).forEach((key) => body.set("card[" + key + "]", read.card[key]));
    const postalCode = (billing.address && billing.address.postal_code) || read.postalCode;
    if (postalCode) body.set("billing_details[address][postal_code]", postalCode);
    if (billing.email) body.set("billing_details[email]", billing.email);
    if (billing.name) body.set("billing_details[name]", billing.name);

    // A form-encoded POST with no custom header: a "simple" cross-origin request, no preflight.
    const url = apiBase + "/v1/payment_methods?key=" + encodeURIComponent(publishableKey);
    try {
      const response = await fetch(url, { method: "POST", body: body });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok || answer.error) {
        const error = answer.error || {};
        const message = error.code === "invalid_expiry_year" ? "Your card's expiration year is invalid." : error.message;
        return { error: { type: error.type || "api_error", code: error.code, message: message || "Your card could not be used." } };
      }
      return { paymentMethod: answer };
    } catch (_) {
      return { error: { type: "api_connection_error", message: "Could not reach the local Stripe stand-in." } };
    }
  }

  window.Stripe = function (publishableKey, options) {
    const stripe = fakeStripe(publishableKey, options);
    const elements = stripe.elements;
    stripe.elements = function () {
      const group = elements.apply(stripe, arguments);
      const create = group.create;
      group.create = function () {
        return withElementMethods(create.apply(group, arguments));
      };
      return group;
    };
    stripe.createPaymentMethod = function (options, legacyElement, legacyData) {
      return createPaymentMethod(publishableKey, options, legacyElement, legacyData);
    };
    return stripe;
  };
})();
