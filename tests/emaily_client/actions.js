// The original Emaily client's action creators (client/src/actions/index.js), unchanged, with the
// global `axios` of the version the page loaded. Redux is left out: `dispatch` stores the payload
// as the client's authReducer does and renders the header line of client/src/components/Header.js
// (React renders an undefined `credits` as nothing, hence "Credits: " for a non-user answer).
/* global axios */
(function () {
  const FETCH_USER = 'fetch_user';

  const fetchUser = () => async dispatch => {
    const res = await axios.get('/api/current_user');
    dispatch({ type: FETCH_USER, payload: res.data });
  };

  const handleToken = token => async dispatch => {
    const res = await axios.post('/api/stripe', token);
    dispatch({ type: FETCH_USER, payload: res.data });
  };

  const store = { auth: null, payload: undefined };
  function dispatch(action) {
    if (action.type !== FETCH_USER) return;
    store.payload = action.payload;
    store.auth = action.payload || false;
    const credits = store.auth ? store.auth.credits : undefined;
    document.getElementById('header').textContent = store.auth ? `Credits: ${credits === undefined ? '' : credits}` : 'Login With Google';
  }

  // What the test calls: run an action creator, answer what it dispatched (or how axios rejected).
  async function run(thunk) {
    try {
      await thunk(dispatch);
      return { payload: store.payload };
    } catch (error) {
      const response = error.response || {};
      return { rejected: true, status: response.status, data: response.data };
    }
  }

  window.emaily = {
    fetchUser: () => run(fetchUser()),
    handleToken: token => run(handleToken(token)),
  };
})();
