// Calls the simulator through the npm package `zadarma` (pinned in package.json) and prints one JSON line a call.
// Usage: node zadarma_calls.js BASE_URL  (ZADARMA_USER_KEY / ZADARMA_SECRET_KEY in the environment).
const { api } = require('zadarma');

const baseURL = process.argv[2];
const today = new Date().toISOString().slice(0, 10);
const calls = [
  ['balance', { api_method: '/v1/info/balance/' }],
  ['price', { api_method: '/v1/info/price/', params: { number: '447700900123' } }],
  ['callback', { api_method: '/v1/request/callback/',
                 params: { from: '442037691880', to: '447700900123', predicted: 'predicted' } }],
  ['sms', { http_method: 'POST', api_method: '/v1/sms/send/',
            params: { number: '447700900123', message: 'Здравствуйте! Перезвоните нам, пожалуйста: 100% скидка' } }],
  ['callerid', { http_method: 'PUT', api_method: '/v1/sip/callerid/', params: { id: '00001', number: '442037691880' } }],
  ['pbx_statistics', { api_method: '/v1/statistics/pbx/',
                       params: { start: `${today} 00:00:00`, end: `${today} 23:59:59`, version: 2 } }],
  ['pbx_internal', { api_method: '/v1/pbx/internal/' }],
];

(async () => {
  for (const [name, request] of calls) {
    const result = await api({ baseURL, timeout: 10000, ...request });
    const plain = result instanceof Error ? { error: String(result) } : result;
    console.log(JSON.stringify({ name, result: plain }));
  }
})();
