// A spectask client in TypeScript, written from spec/ alone (tests/test_ts_client.py runs it).
//
//   node dist/main.js queue-and-cancel SPEC_DIR AMQP_URL
//       submits one task, waits until the collector has it QUEUED, cancels it; prints its id
//   node dist/main.js run SPEC_DIR AMQP_URL CANCELLED_ID
//       submits one task of every operation and one invalid task, polls the status RPC until
//       every task (and the cancelled one) is final; prints what it saw, typed, as JSON
//
// Exit code 1 with one line on stderr on any failure.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import * as models from './models';
import { readContract, type Contract, type SendRoute } from './spec';
import { Wire } from './wire';

/** An 8x6 PNG, inline (ImageSource.data_base64): a remote client has no file on the worker. */
const PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAgAAAAGCAIAAABxZ0isAAAAFElEQVR4nGM8IWfDgA0wYRWlkwQArE4BLjZrArMAAAAASUVORK5CYII=';
const image = () => new models.ImageSource({ dataBase64: PNG });
const series = [3, 1, 4, 1, 5, 9, 2, 6];

/** One typed payload per task operation of the spec (a new operation needs one here). */
const PAYLOADS: Record<string, () => { marshal(): string }> = {
  submitImageResize: () => new models.ImageResize({ reservedImage: image(), width: 4, height: 3 }),
  submitImageConvert: () =>
    new models.ImageConvert({ reservedImage: image(), format: models.ImageFormat.JPEG }),
  submitImageFilter: () =>
    new models.ImageFilter({ reservedImage: image(), filter: models.Filter.GRAYSCALE }),
  submitDataAggregate: () =>
    new models.DataAggregate({
      records: [
        { k: 'a', v: 1 },
        { k: 'b', v: 2 },
        { k: 'a', v: 3 },
      ] as any,
      groupBy: 'k',
      field: 'v',
    }),
  submitDataStatistics: () => new models.DataStatistics({ values: series }),
  submitDataDetectPatterns: () => new models.DataDetectPatterns({ values: [...series, 100] }),
  submitReportPdf: () => new models.ReportPdf({ title: 'ts client', series }),
  submitReportChart: () => new models.ReportChart({ title: 'ts client', series }),
  submitReportEmail: () =>
    new models.ReportEmail({ title: 'ts client', series, to: ['ts-client@example.org'] }),
};

function need(contract: Contract, operation: string): SendRoute {
  const route = contract.sends.get(operation);
  if (!route) throw new Error(`the spec has no send operation ${operation}`);
  return route;
}

async function submit(wire: Wire, route: SendRoute, body: string): Promise<string> {
  const taskId = randomUUID().replace(/-/g, '');
  await wire.send(route, body, { messageId: taskId });
  return taskId;
}

/** Poll the status RPC until every id is in a final state (the spec's TaskState list). */
async function untilFinal(
  wire: Wire,
  contract: Contract,
  ids: string[],
  timeoutMs: number,
  done: (view: models.TaskStatusView) => boolean = (v) => contract.finalStates.has(v.state),
): Promise<Map<string, models.TaskStatusView>> {
  const route = need(contract, 'getStatus');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const reply = await wire.status(route, ids);
    if (reply.error) throw new Error(`status refused: ${reply.error.reservedType}: ${reply.error.message}`);
    const views = new Map((reply.tasks ?? []).map((v) => [v.taskId, v]));
    const waiting = ids.filter((id) => !views.has(id) || !done(views.get(id)!));
    if (waiting.length === 0) return views;
    if (Date.now() > deadline) {
      const states = waiting.map((id) => `${id}: ${views.get(id)?.state ?? 'no view'}`);
      throw new Error(`not final within ${timeoutMs} ms: ${states.join(', ')}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The stored result as the model its message's x-spectask-result names. */
function typedResult(route: SendRoute, view: models.TaskStatusView) {
  const model = (models as Record<string, any>)[route.resultTitle ?? ''];
  if (!model?.unmarshal) throw new Error(`${route.operation}: no model ${route.resultTitle}`);
  const typed = model.unmarshal(view.result as unknown as object);
  return { model: model.name as string, result: JSON.parse(typed.marshal()) };
}

async function queueAndCancel(wire: Wire, contract: Contract): Promise<object> {
  const route = need(contract, 'submitReportChart');
  const taskId = await submit(wire, route, PAYLOADS.submitReportChart().marshal());
  await untilFinal(wire, contract, [taskId], 30000, (v) => v.state === models.TaskState.QUEUED);
  const cancel = new models.TaskCancel({
    taskIds: [taskId],
    requestedAt: new Date().toISOString(),
    requestedBy: `ts-client@${hostname()}`,
    reason: 'the TypeScript client cancels it',
  });
  await wire.send(need(contract, 'cancelTasks'), cancel.marshal(), {
    messageId: randomUUID().replace(/-/g, ''),
  });
  return { cancelled: taskId, state_when_cancelled: 'QUEUED' };
}

async function run(wire: Wire, contract: Contract, cancelled: string): Promise<object> {
  const tasks = [...contract.sends.values()].filter((r) => r.resultTitle !== undefined);
  const missing = tasks.filter((r) => !(r.operation in PAYLOADS)).map((r) => r.operation);
  if (missing.length) throw new Error(`no payload for the spec's operations: ${missing}`);
  const ids = new Map<string, SendRoute>();
  for (const route of tasks) {
    ids.set(await submit(wire, route, PAYLOADS[route.operation]().marshal()), route);
  }
  // breaks DataStatistics' schema (values must be numbers): the worker dead-letters it
  const invalidRoute = need(contract, 'submitDataStatistics');
  const invalid = await submit(wire, invalidRoute, JSON.stringify({ values: 'not a list' }));
  // a status request the schema refuses (task_ids needs one id) is answered with the reason
  const refused = await wire.status(need(contract, 'getStatus'), []);

  const views = await untilFinal(wire, contract, [...ids.keys(), invalid, cancelled], 240000);
  const submitted: Record<string, object> = {};
  for (const [taskId, route] of ids) {
    const view = views.get(taskId)!;
    const typed = view.state === models.TaskState.SUCCEEDED ? typedResult(route, view) : {};
    submitted[route.operation] = {
      task_id: taskId,
      message_type: view.messageType,
      state: view.state,
      error: view.error ? JSON.parse(view.error.marshal()) : undefined,
      ...typed,
    };
  }
  const dead = views.get(invalid)!;
  return {
    submitted,
    invalid: {
      task_id: invalid,
      state: dead.state,
      dead_reason: dead.deadReason,
      error: dead.error ? JSON.parse(dead.error.marshal()) : undefined,
    },
    cancelled: { task_id: cancelled, state: views.get(cancelled)!.state },
    refused_status: { tasks: refused.tasks, error: refused.error ? JSON.parse(refused.error.marshal()) : undefined },
  };
}

async function main(): Promise<void> {
  const [command, specDir, url, cancelled] = process.argv.slice(2);
  if (!specDir || !url || !['queue-and-cancel', 'run'].includes(command ?? '')) {
    throw new Error('usage: main.js queue-and-cancel|run SPEC_DIR AMQP_URL [CANCELLED_ID]');
  }
  const contract = await readContract(specDir);
  const wire = await Wire.open(url);
  try {
    const out =
      command === 'run'
        ? await run(wire, contract, cancelled ?? '')
        : await queueAndCancel(wire, contract);
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    await wire.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`ts-client: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
