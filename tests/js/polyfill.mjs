// matrix-js-sdk 41 and later declare Node 22; on Node 20 the one missing
// piece is Promise.withResolvers. This module is imported before the SDK.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}
