// A Node service calling wagate with @grpc/grpc-js and @grpc/proto-loader.
//
// Usage: npm ci && node example.js [ADDRESS] [PROTO_DIR]
//
// Loads wagate's protos (PROTO_DIR defaults to the repository's proto/),
// opens a window with RecordInbound, sends a text, watches it, and reads the
// reason and WhatsApp code of a refusal: wagate puts a google.rpc.Status in
// the `grpc-status-details-bin` trailer, decoded here with the
// google/rpc protos shipped in proto/google/rpc.
'use strict';

const assert = require('node:assert/strict');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const address = process.argv[2] || 'localhost:50051';
const protoDir = process.argv[3] || path.join(__dirname, '..', '..', 'proto');

const definition = protoLoader.loadSync(['wagate/v1/gateway.proto'], {
  includeDirs: [protoDir],
  keepCase: true,
  enums: String,
  longs: String,
  defaults: true,
  oneofs: true,
});
const wagate = grpc.loadPackageDefinition(definition).wagate.v1;

const richErrors = new protobuf.Root();
richErrors.resolvePath = (_origin, target) => path.join(protoDir, target);
richErrors.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], {
  keepCase: true,
});
const Status = richErrors.lookupType('google.rpc.Status');
const ErrorInfo = richErrors.lookupType('google.rpc.ErrorInfo');

/** The google.rpc.ErrorInfo of a refused call, if it carries one. */
function errorInfo(error) {
  const [bytes] = error.metadata.get('grpc-status-details-bin');
  if (!bytes) return undefined;
  const detail = Status.decode(bytes).details.find(
    (any) => any.type_url === 'type.googleapis.com/google.rpc.ErrorInfo',
  );
  return detail && ErrorInfo.toObject(ErrorInfo.decode(detail.value));
}

/** A unary call as a promise. */
function unary(client, method, request) {
  return new Promise((resolve, reject) =>
    client[method](request, (error, response) => (error ? reject(error) : resolve(response))),
  );
}

/** The first state WatchMessages streams for `messageId`. */
function firstState(client, messageId) {
  return new Promise((resolve, reject) => {
    const watch = client.WatchMessages({ message_ids: [messageId] });
    watch.on('data', (response) => {
      resolve(response.message);
      watch.cancel();
    });
    watch.on('error', (error) => {
      if (error.code !== grpc.status.CANCELLED) reject(error);
    });
  });
}

async function main() {
  const gateway = new wagate.Gateway(address, grpc.credentials.createInsecure());
  const business = '+15550001111';
  const customer = '+27821234568';

  const recorded = await unary(gateway, 'RecordInbound', {
    business_number: business,
    customer_number: '+27 82 123 4568',
    message_id: 'wamid.node-1',
  });
  assert.equal(recorded.outcome, 'INBOUND_OUTCOME_OPENED');
  assert.equal(recorded.window.state, 'WINDOW_STATE_OPEN');
  assert.equal(recorded.window.customer_number, customer);

  const sent = await unary(gateway, 'SendMessage', {
    business_number: business,
    customer_number: customer,
    idempotency_key: 'node-1',
    text: { body: 'Hello from Node' },
  });
  assert.equal(sent.kind, 'MESSAGE_KIND_FREE_FORM');
  assert.equal(sent.pricing_category, 'PRICING_CATEGORY_SERVICE');

  const state = await firstState(gateway, sent.message_id);
  assert.equal(state.message_id, sent.message_id);
  assert.equal(state.status, 'MESSAGE_STATUS_ACCEPTED');

  let refused;
  try {
    await unary(gateway, 'SendMessage', {
      business_number: business,
      customer_number: '+27829999998',
      idempotency_key: 'node-2',
      text: { body: 'Hello?' },
    });
  } catch (error) {
    refused = error;
  }
  assert.ok(refused, 'a send outside the window must be refused');
  assert.equal(refused.code, grpc.status.FAILED_PRECONDITION);
  const info = errorInfo(refused);
  assert.ok(info, 'the refusal carries a google.rpc.ErrorInfo');
  assert.equal(info.reason, 'WINDOW_CLOSED');
  assert.equal(info.domain, 'wagate');
  assert.equal(info.metadata.whatsapp_code, '131047');

  console.log(
    `node example ok: message ${sent.message_id} ${state.status}, ` +
      `refused ${info.reason} (whatsapp_code ${info.metadata.whatsapp_code})`,
  );
  gateway.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
