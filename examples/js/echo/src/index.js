// `echo` in JavaScript: every text or binary message comes back unchanged,
// as the direct reply to its sender. Same behaviour as examples/echo.
export default {
  onMessage(conn, msg) {
    return msg;
  },
};
