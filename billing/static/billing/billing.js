/*
 * The Add credits dialog (README, "Architecture"; docs/INSTALL.md): a Stripe.js card Element, a PaymentMethod created in the
 * browser, then POST /billing/charge/ with {pack, payment_method}. The server names the price;
 * this page only names a pack. 3-D Secure: stripe.confirmCardPayment(client_secret), then
 * POST /billing/charge/<id>/confirm/. Plain JS, no build step, no inline script (CSP).
 * The saved card section is the second part of this file (one script: the page loads Stripe.js
 * and this, nothing else).
 */
// What the scripts below share: a JSON POST with Django's CSRF token, and the sentence to show
// when one fails (the server's own "error" when it sent one).
const billingHttp = (function () {
  "use strict";

  async function postJSON(url, data, csrfToken) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken },
      body: JSON.stringify(data || {}),
    });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    return { status: response.status, body: body || {} };
  }

  function messageFor(result, fallback) {
    if (result.status === 401) return "Your session has ended. Sign in again, then retry.";
    if (result.status === 403) return "This page has expired. Reload it and try again.";
    if (result.body.error) return result.body.error;
    return "Something went wrong (error " + result.status + "). " + fallback;
  }

  return { postJSON: postJSON, messageFor: messageFor };
})();

(function () {
  "use strict";

  const dialog = document.getElementById("add-credits-dialog");
  if (!dialog) return;

  const form = dialog.querySelector("#pay-form");
  const submit = dialog.querySelector("#pay-submit");
  const errorBox = dialog.querySelector("#pay-error");
  const cardMount = dialog.querySelector("#card-element");
  const config = dialog.dataset;
  const csrfToken = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  let stripe = null;
  let card = null;
  let paying = false;
  let steppingAside = false; // the dialog is closed on purpose during 3-D Secure

  // --- Stripe.js --------------------------------------------------------------------------
  function ensureStripe() {
    if (stripe) return true;
    if (typeof window.Stripe !== "function") {
      showError("The card form could not load. Check your connection and reload the page.");
      submit.disabled = true;
      return false;
    }
    stripe = window.Stripe(config.stripeKey);
    card = stripe.elements().create("card", {
      style: {
        base: { fontSize: "16px", color: "#1d2433", "::placeholder": { color: "#98a2b3" } },
        invalid: { color: "#b42318" },
      },
    });
    card.mount(cardMount);
    card.on("change", function (event) {
      // Real Stripe.js passes {error, complete}; the local stand-in passes nothing.
      if (event && event.error) showError(event.error.message);
      else if (!paying) clearError();
    });
    return true;
  }

  // --- the dialog ----------------------------------------------------------------------------
  function packInputs() {
    return Array.from(form.querySelectorAll("input[name=pack]"));
  }

  function selectedPack() {
    return packInputs().find((input) => input.checked) || packInputs()[0] || null;
  }

  function choosePack(slug) {
    const input = packInputs().find((candidate) => candidate.value === slug);
    if (input) input.checked = true;
    updatePayLabel();
  }

  function updatePayLabel() {
    const pack = selectedPack();
    submit.textContent = pack ? "Pay " + pack.dataset.price : "Pay";
  }

  function openDialog(slug) {
    if (paying) return; // a payment (maybe its 3-D Secure step) is still going on
    choosePack(slug || config.defaultPack);
    clearError();
    if (!dialog.open) dialog.showModal();
    if (ensureStripe()) {
      submit.disabled = false;
      if (typeof card.focus === "function") card.focus();
    }
  }

  function closeDialog() {
    if (!paying && dialog.open) dialog.close();
  }

  function showError(message) {
    errorBox.textContent = message;
  }

  function clearError() {
    errorBox.textContent = "";
  }

  function setPaying(on, label) {
    paying = on;
    submit.disabled = on;
    submit.setAttribute("aria-busy", on ? "true" : "false");
    form.querySelectorAll("[data-close-dialog], input[name=pack]").forEach((el) => {
      el.disabled = on;
    });
    if (on) submit.textContent = label;
    else updatePayLabel();
  }

  // --- talking to the server -----------------------------------------------------------------
  const postJSON = (url, data) => billingHttp.postJSON(url, data, csrfToken);
  const messageFor = (result) =>
    billingHttp.messageFor(result, "Reload the page to check your balance before trying again.");

  // Stripe draws its 3-D Secure window over the page; a modal <dialog> would leave it behind
  // the dialog and unclickable, so the dialog steps aside until the bank has answered.
  async function authenticate(answer) {
    submit.textContent = "Waiting for your bank…";
    steppingAside = true;
    dialog.close();
    let outcome;
    try {
      outcome = await stripe.confirmCardPayment(answer.client_secret);
    } finally {
      if (!dialog.open) dialog.showModal();
      steppingAside = false;
    }
    submit.textContent = "Confirming…";
    const url = config.confirmUrl.replace(config.paymentPlaceholder, encodeURIComponent(answer.payment));
    const result = await postJSON(url, {});
    if (outcome && outcome.error && !(result.status === 200 && result.body.status === "succeeded")) {
      // The server's sentence for the customer (billing/decline_messages.py), not Stripe.js's words.
      if (result.body && result.body.error) return result;
      return { status: 402, body: { error: "Your bank did not confirm the payment." } };
    }
    return result;
  }

  async function pay() {
    const pack = selectedPack();
    if (!pack) return showError("Choose a pack first.");
    clearError();
    setPaying(true, "Processing…");
    try {
      const created = await stripe.createPaymentMethod({ type: "card", card: card });
      if (created.error || !created.paymentMethod) {
        showError((created.error && created.error.message) || "Check your card details.");
        return;
      }
      let result = await postJSON(config.chargeUrl, { pack: pack.value, payment_method: created.paymentMethod.id });
      if (result.status === 200 && result.body.status === "requires_action") {
        result = await authenticate(result.body);
      }
      if (result.status === 200 && result.body.status === "succeeded") {
        succeeded(result.body);
      } else if (result.status === 200 && result.body.status === "requires_action") {
        showError("Your bank still needs you to confirm this payment. Try again.");
      } else {
        showError(messageFor(result));
      }
    } catch (_) {
      showError("We could not reach the server. If your card was charged the credits will appear shortly; reload the page to check.");
    } finally {
      setPaying(false);
    }
  }

  // --- success -------------------------------------------------------------------------------
  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  function succeeded(answer) {
    const balance = Number(answer.credits);
    const header = document.getElementById("header-credits-value");
    if (header) header.textContent = String(balance);
    const page = document.getElementById("balance-value");
    if (page) page.textContent = String(balance);
    const unit = document.getElementById("balance-unit");
    if (unit) unit.textContent = balance === 1 ? "credit" : "credits";
    if (typeof card.clear === "function") card.clear();
    paying = false;
    dialog.close();
    announce("Payment received: " + plural(Number(answer.added), "credit") + " added. Your balance is " + plural(balance, "credit") + ".");
    refreshHistory();
  }

  function announce(text) {
    const main = document.querySelector("main");
    let list = main.querySelector(".messages");
    if (!list) {
      list = document.createElement("ul");
      list.className = "messages";
      list.setAttribute("role", "status");
      main.prepend(list);
    }
    const item = document.createElement("li");
    item.className = "message message-success";
    item.dataset.testid = "pay-success";
    item.textContent = text;
    list.replaceChildren(item);
    window.scrollTo({ top: 0, behavior: "smooth" });
  }

  // The payment history and ledger come from the server, as on a reload, without losing the message.
  async function refreshHistory() {
    try {
      const response = await fetch(window.location.pathname + window.location.search, {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
      });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      ["payments", "ledger"].forEach((id) => {
        const current = document.getElementById(id);
        const replacement = fresh.getElementById(id);
        if (current && replacement) current.replaceWith(document.adoptNode(replacement));
      });
    } catch (_) {
      // The message and balances are already right; a reload shows the history.
    }
  }

  // --- wiring --------------------------------------------------------------------------------
  document.addEventListener("click", function (event) {
    const buy = event.target.closest("[data-buy-pack]");
    if (buy) {
      event.preventDefault();
      openDialog(buy.dataset.buyPack);
      return;
    }
    // The header's "Add credits" link opens the dialog here instead of reloading the page.
    if (event.target.closest("[data-add-credits]")) {
      event.preventDefault();
      openDialog(null);
      return;
    }
    if (event.target.closest("[data-close-dialog]")) closeDialog();
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!paying && ensureStripe()) pay();
  });

  form.addEventListener("change", function (event) {
    if (event.target.name === "pack") updatePayLabel();
  });

  dialog.addEventListener("cancel", function (event) {
    if (paying) event.preventDefault(); // Escape must not hide a payment in progress
  });

  dialog.addEventListener("close", function () {
    if (!steppingAside && !paying) clearError();
  });

  // Clicking the backdrop closes the dialog, like Escape.
  dialog.addEventListener("click", function (event) {
    if (event.target === dialog) closeDialog();
  });

  // Other pages link to /billing/#add-credits: one click from anywhere opens the dialog.
  if (window.location.hash === "#add-credits") {
    history.replaceState(null, "", window.location.pathname + window.location.search);
    openDialog(null);
  }
  updatePayLabel();
})();

/*
 * The saved card on /billing/ (docs/INSTALL.md, "Saved cards"):
 * - Save a card: POST /billing/cards/setup/ answers a SetupIntent's client_secret, Stripe.js
 *   confirmCardSetup confirms it with the card Element (3-D Secure included), then
 *   POST /billing/cards/ {setup_intent} saves its card.
 * - Remove: after the user confirms, POST /billing/cards/remove/.
 * - Buy with the saved card: POST /billing/charge/ {pack, saved_card: true}; 3-D Secure goes
 *   through stripe.confirmCardPayment and /billing/charge/<id>/confirm/, as in billing.js.
 * Stripe.js is loaded (deferred) with this script and used on first click.
 */
(function () {
  "use strict";

  const section = document.getElementById("saved-card");
  if (!section) return;

  const config = section.dataset;
  const csrfToken = section.querySelector("input[name=csrfmiddlewaretoken]").value;
  const errorBox = section.querySelector("#saved-card-error");
  const dialog = document.getElementById("save-card-dialog");
  let stripe = null;
  let card = null;
  let busy = false;

  function getStripe() {
    if (!stripe && typeof window.Stripe === "function") stripe = window.Stripe(config.stripeKey);
    return stripe;
  }

  const postJSON = (url, data) => billingHttp.postJSON(url, data, csrfToken);
  const messageFor = (result) => billingHttp.messageFor(result, "Reload the page and try again.");

  function showError(box, message) {
    box.textContent = message || "";
  }

  // --- buying with the saved card --------------------------------------------------------------
  async function buyWithSavedCard(button) {
    if (busy) return;
    busy = true;
    const label = button.textContent;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    button.textContent = "Processing…";
    showError(errorBox, "");
    try {
      let result = await postJSON(config.chargeUrl, { pack: button.dataset.buySaved, saved_card: true });
      if (result.status === 200 && result.body.status === "requires_action") {
        result = await authenticate(result.body);
      }
      if (result.status === 200 && result.body.status === "succeeded") {
        return reloadWith("bought", result.body.added);
      }
      showError(errorBox, messageFor(result));
    } catch (_) {
      showError(errorBox, "We could not reach the server. Reload the page to check your balance before trying again.");
    } finally {
      busy = false;
      button.disabled = false;
      button.setAttribute("aria-busy", "false");
      button.textContent = label;
    }
  }

  async function authenticate(answer) {
    const client = getStripe();
    let outcome = null;
    if (client) outcome = await client.confirmCardPayment(answer.client_secret);
    const url = config.confirmUrl.replace("/0/", "/" + encodeURIComponent(answer.payment) + "/");
    const result = await postJSON(url, {});
    if (outcome && outcome.error && !(result.status === 200 && result.body.status === "succeeded")) {
      // The server's sentence for the customer (billing/decline_messages.py), not Stripe.js's words.
      if (result.body && result.body.error) return result;
      return { status: 402, body: { error: "Your bank did not confirm the payment." } };
    }
    return result;
  }

  // --- removing it -------------------------------------------------------------------------------
  async function removeCard(button) {
    if (busy || !window.confirm(button.dataset.confirm)) return;
    busy = true;
    button.disabled = true;
    try {
      const result = await postJSON(config.removeUrl, {});
      if (result.status === 200 || result.status === 404) return reloadWith("card", "removed");
      showError(errorBox, messageFor(result));
    } catch (_) {
      showError(errorBox, "We could not reach the server. Try again.");
    } finally {
      busy = false;
      button.disabled = false;
    }
  }

  // --- saving one ----------------------------------------------------------------------------------
  function openSaveDialog() {
    if (!dialog) return;
    const box = dialog.querySelector("#save-card-dialog-error");
    const submit = dialog.querySelector("#save-card-submit");
    showError(box, "");
    if (!dialog.open) dialog.showModal();
    if (!getStripe()) {
      showError(box, "The card form could not load. Check your connection and reload the page.");
      submit.disabled = true;
      return;
    }
    if (!card) {
      card = stripe.elements().create("card", {
        style: { base: { fontSize: "16px", color: "#1d2433", "::placeholder": { color: "#98a2b3" } } },
      });
      card.mount(dialog.querySelector("#save-card-element"));
    }
    submit.disabled = false;
    if (typeof card.focus === "function") card.focus();
  }

  async function saveCard() {
    const box = dialog.querySelector("#save-card-dialog-error");
    const submit = dialog.querySelector("#save-card-submit");
    if (busy || !card) return;
    busy = true;
    submit.disabled = true;
    submit.textContent = "Saving…";
    showError(box, "");
    try {
      const setup = await postJSON(config.setupUrl, {});
      if (setup.status !== 200) return showError(box, messageFor(setup));
      // Stripe draws a bank's 3-D Secure window over the page; a modal dialog would cover it.
      dialog.close();
      let confirmed;
      try {
        confirmed = await stripe.confirmCardSetup(setup.body.client_secret, { payment_method: { card: card } });
      } finally {
        if (!dialog.open) dialog.showModal();
      }
      if (confirmed.error || !confirmed.setupIntent) {
        return showError(box, (confirmed.error && confirmed.error.message) || "Your card could not be saved.");
      }
      const saved = await postJSON(config.saveUrl, { setup_intent: confirmed.setupIntent.id });
      if (saved.status !== 201) return showError(box, messageFor(saved));
      busy = false;
      dialog.close();
      return reloadWith("card", "saved");
    } catch (_) {
      showError(box, "We could not reach the server. Try again.");
    } finally {
      busy = false;
      submit.disabled = false;
      submit.textContent = "Save card";
    }
  }

  // The page reloads after a change, so balance, history and buttons all come from the server.
  function reloadWith(name, value) {
    window.location.assign(window.location.pathname + "?" + name + "=" + encodeURIComponent(value) + "#saved-card");
  }

  const MESSAGES = {
    saved: "Your card is saved. You can now buy credits with it in one click.",
    removed: "Your card was removed.",
  };

  function announce(text) {
    const main = document.querySelector("main");
    if (!main) return;
    const list = document.createElement("ul");
    list.className = "messages";
    list.setAttribute("role", "status");
    const item = document.createElement("li");
    item.className = "message message-success";
    item.dataset.testid = "saved-card-message";
    item.textContent = text;
    list.appendChild(item);
    main.prepend(list);
  }

  // --- wiring --------------------------------------------------------------------------------------
  document.addEventListener("click", function (event) {
    const buy = event.target.closest("[data-buy-saved]");
    if (buy) return buyWithSavedCard(buy);
    const remove = event.target.closest("[data-remove-card]");
    if (remove) return removeCard(remove);
    if (event.target.closest("[data-save-card]")) return openSaveDialog();
    if (event.target.closest("[data-close-save-card]") && dialog && !busy) dialog.close();
  });

  if (dialog) {
    dialog.querySelector("#save-card-form").addEventListener("submit", function (event) {
      event.preventDefault();
      saveCard();
    });
    dialog.addEventListener("cancel", function (event) {
      if (busy) event.preventDefault();
    });
  }

  const params = new URLSearchParams(window.location.search);
  const bought = params.get("bought");
  const change = params.get("card");
  if (bought !== null || change !== null) {
    history.replaceState(null, "", window.location.pathname + "#saved-card");
    if (bought && /^\d+$/.test(bought)) {
      announce("Payment received: " + bought + " credit" + (bought === "1" ? "" : "s") + " added with your saved card.");
    } else if (MESSAGES[change]) {
      announce(MESSAGES[change]);
    }
  }
})();

// Auto-recharge settings on /billing/ (billing/_auto_recharge.html): shows the consent sentence
// built from the values in the form, and sends them as JSON to billing.views.auto_recharge.
(function () {
  "use strict";

  const section = document.getElementById("auto-recharge");
  const form = document.getElementById("auto-recharge-form");
  if (!section || !form) return;

  const csrfToken = section.querySelector("input[name=csrfmiddlewaretoken]").value;
  const errorBox = section.querySelector("#auto-recharge-error");
  const consent = form.querySelector(".auto-recharge-consent");
  let busy = false;

  function values() {
    const pack = form.elements.pack.selectedOptions[0];
    return {
      threshold: Number(form.elements.threshold.value),
      monthly_limit: Number(form.elements.monthly_limit.value),
      pack: pack ? pack.value : "",
      credits: pack ? pack.dataset.credits : "",
      price: pack ? pack.dataset.price : "",
    };
  }

  function showConsent() {
    const v = values();
    consent.textContent =
      "When your balance falls below " + v.threshold + ", charge your " + section.dataset.card + " " + v.price +
      " for " + v.credits + " credits, at most " + v.monthly_limit + " times a month.";
    // Once only: the sentence already agreed to is shown above the form; a changed one shows here.
    consent.hidden = consent.dataset.agreed !== undefined && consent.textContent === consent.dataset.agreed;
  }

  function messageFor(status, body) {
    if (status === 401) return "Your session has ended. Sign in again, then retry.";
    if (status === 403) return "This page has expired. Reload it and try again.";
    return (body && body.error) || "The settings could not be saved. Try again.";
  }

  async function save(enabled) {
    if (busy) return;
    busy = true;
    errorBox.textContent = "";
    const v = values();
    try {
      const response = await fetch(section.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken },
        body: JSON.stringify({ enabled: enabled, pack: v.pack, threshold: v.threshold, monthly_limit: v.monthly_limit }),
      });
      let body = null;
      try {
        body = await response.json();
      } catch (_) {
        body = null;
      }
      if (response.status === 200) {
        window.location.hash = "auto-recharge";
        window.location.reload();
        return;
      }
      errorBox.textContent = messageFor(response.status, body);
    } catch (_) {
      errorBox.textContent = "We could not reach the server. Try again.";
    } finally {
      busy = false;
    }
  }

  form.addEventListener("input", showConsent);
  form.addEventListener("change", showConsent);
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const button = event.submitter;
    save(!button || button.dataset.enable !== "false");
  });
  showConsent();
})();

/*
 * Finish a payment left in 3-D Secure, from its row in the payment history (billing/index.html):
 * POST /billing/charge/<id>/resume/ answers the intent's client_secret while Stripe still waits
 * for the bank, then the same steps as the checkout: stripe.confirmCardPayment(client_secret) and
 * POST /billing/charge/<id>/confirm/, which credits the payment once (billing.fulfilment). The
 * page reloads on success, so balance, history and ledger come from the server.
 */
(function () {
  "use strict";

  const section = document.getElementById("payments");
  if (!section) return;

  // Back from a finished payment (the page reloaded with ?finished=<credits added>).
  const finished = new URLSearchParams(window.location.search).get("finished");
  if (finished !== null) {
    history.replaceState(null, "", window.location.pathname + "#payments");
    if (/^\d+$/.test(finished)) {
      const main = document.querySelector("main");
      const list = document.createElement("ul");
      list.className = "messages";
      list.setAttribute("role", "status");
      const item = document.createElement("li");
      item.className = "message message-success";
      item.dataset.testid = "finish-success";
      item.textContent = "Payment received: " + finished + " credit" + (finished === "1" ? "" : "s") + " added.";
      list.appendChild(item);
      if (main) main.prepend(list);
    }
  }
  if (!section.querySelector("[data-finish-payment]")) return;

  const config = section.dataset;
  const csrfToken = section.querySelector("input[name=csrfmiddlewaretoken]").value;
  const errorBox = section.querySelector("#finish-payment-error");
  let stripe = null;
  let busy = false;

  const postJSON = (url, data) => billingHttp.postJSON(url, data, csrfToken);
  const messageFor = (result) => billingHttp.messageFor(result, "Reload the page to check your balance before trying again.");
  const urlFor = (template, paymentId) => template.replace("/0/", "/" + encodeURIComponent(paymentId) + "/");

  function getStripe() {
    if (!stripe && typeof window.Stripe === "function" && config.stripeKey) stripe = window.Stripe(config.stripeKey);
    return stripe;
  }

  async function finish(button) {
    if (busy) return;
    const client = getStripe();
    if (!client) {
      errorBox.textContent = "The payment form could not load. Check your connection and reload the page.";
      return;
    }
    busy = true;
    const label = button.textContent;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    button.textContent = "Waiting for your bank…";
    errorBox.textContent = "";
    const paymentId = button.dataset.finishPayment;
    try {
      const resumed = await postJSON(urlFor(config.resumeUrl, paymentId), {});
      if (!(resumed.status === 200 && resumed.body.status === "requires_action")) {
        errorBox.textContent = messageFor(resumed);
        return;
      }
      const outcome = await client.confirmCardPayment(resumed.body.client_secret);
      button.textContent = "Confirming…";
      const result = await postJSON(urlFor(config.confirmUrl, paymentId), {});
      if (result.status === 200 && result.body.status === "succeeded") {
        window.location.assign(window.location.pathname + "?finished=" + encodeURIComponent(result.body.added) + "#payments");
        return;
      }
      if (result.status === 200 && result.body.status === "requires_action") {
        errorBox.textContent = "Your bank still needs you to confirm this payment. Press Finish payment to try again.";
      } else if (outcome && outcome.error && !(result.body && result.body.error)) {
        errorBox.textContent = "Your bank did not confirm the payment.";
      } else {
        // The server's sentence for the customer (billing/decline_messages.py), not Stripe.js's words.
        errorBox.textContent = messageFor(result);
      }
    } catch (_) {
      errorBox.textContent = "We could not reach the server. Reload the page to check your balance before trying again.";
    } finally {
      busy = false;
      button.disabled = false;
      button.setAttribute("aria-busy", "false");
      button.textContent = label;
    }
  }

  section.addEventListener("click", function (event) {
    const button = event.target.closest("[data-finish-payment]");
    if (button) finish(button);
  });

})();
