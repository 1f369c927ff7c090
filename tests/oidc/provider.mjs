// A real OpenID Provider for the SSO tests (node provider.mjs PORT REDIRECT_URI), from the certified
// `oidc-provider` package. Accounts come from OIDC_ACCOUNTS (JSON: login -> claims); its development login and
// consent pages stand in for a company's sign-in screen. The client is a native one, so a loopback redirect URI
// matches on any port (RFC 8252, 7.3): one provider serves a module's tests, each with a gateway on its own port.
import Provider from 'oidc-provider';

const [port, redirectUri] = process.argv.slice(2);
const accounts = JSON.parse(process.env.OIDC_ACCOUNTS || '{}');

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: process.env.OIDC_CLIENT_ID,
    application_type: 'native',
    client_secret: process.env.OIDC_CLIENT_SECRET,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  conformIdTokenClaims: false, // the claims asked for by scope go into the ID token too, as most IdPs do
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, ...(accounts[id] || {}) }),
  }),
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['promptproxy-test-only-cookie-key'] },
});
provider.listen(Number(port), '127.0.0.1', () => console.log('ready'));
