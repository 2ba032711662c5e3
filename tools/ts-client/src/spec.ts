// What a client needs to know, read from spec/ alone (nothing of spectask's Python code):
// for each send operation, the exchange, routing key, AMQP message type, content type,
// delivery mode and the title of its result schema; and the final task states.
//
// The rule the documents state: a send operation publishes to the exchange its queue channel
// is bound to (bindings.amqp.x-spectask-bindings) with the operation's bindings.amqp.cc[0] as
// routing key, never to the queue itself.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fromFile, Parser } from '@asyncapi/parser';
import type { AsyncAPIDocumentInterface, OperationInterface } from '@asyncapi/parser';

export interface SendRoute {
  operation: string;
  exchange: string;
  routingKey: string;
  messageType: string;
  contentType: string;
  persistent: boolean;
  mandatory: boolean;
  resultTitle?: string; // the title of x-spectask-result's schema
}

export interface Contract {
  sends: Map<string, SendRoute>;
  finalStates: Set<string>;
}

type Json = Record<string, any>;

/** Does a topic binding pattern (`image_processing.#`, `status`) take this routing key? */
export function matches(pattern: string, key: string): boolean {
  const words = (p: string[], k: string[]): boolean => {
    if (p.length === 0) return k.length === 0;
    if (p[0] === '#') return words(p.slice(1), k) || (k.length > 0 && words(p, k.slice(1)));
    return k.length > 0 && (p[0] === '*' || p[0] === k[0]) && words(p.slice(1), k.slice(1));
  };
  return words(pattern.split('.'), key.split('.'));
}

function route(op: OperationInterface): SendRoute {
  const where = `operation ${op.id()}`;
  const binding: Json = op.bindings().get('amqp')?.value() ?? {};
  const routingKey: string | undefined = binding.cc?.[0];
  if (!routingKey) throw new Error(`${where}: no bindings.amqp.cc[0] (its routing key)`);
  const channel = op.channels().all()[0];
  const amqp: Json = channel?.bindings().get('amqp')?.value() ?? {};
  const bound: Json[] = channel?.json()['bindings']?.amqp?.['x-spectask-bindings'] ?? [];
  let exchange: string | undefined;
  if (amqp.is === 'routingKey') exchange = amqp.exchange?.name;
  else exchange = bound.find((b) => matches(String(b.routingKey), routingKey))?.exchange;
  if (!exchange) throw new Error(`${where}: no exchange of its channel takes '${routingKey}'`);
  const message = op.messages().all()[0];
  const messageType: string | undefined = message?.bindings().get('amqp')?.value()?.messageType;
  if (!message || !messageType) throw new Error(`${where}: no message with a messageType`);
  const result: Json | undefined = message.json()['x-spectask-result'];
  return {
    operation: String(op.id()),
    exchange,
    routingKey,
    messageType,
    contentType: message.contentType() ?? 'application/json',
    persistent: binding.deliveryMode === 2,
    mandatory: binding.mandatory === true,
    resultTitle: result?.title,
  };
}

function finalStates(doc: AsyncAPIDocumentInterface): string[] {
  const state = doc.components().schemas().get('TaskState')?.json() as Json | undefined;
  return state?.['x-spectask-final-states'] ?? [];
}

/** Parse every document of `specDir` with the official parser; refuse one that has errors. */
export async function readContract(specDir: string): Promise<Contract> {
  const parser = new Parser();
  const sends = new Map<string, SendRoute>();
  const finals = new Set<string>();
  const files = readdirSync(specDir).filter((f) => f.endsWith('.asyncapi.yaml'));
  for (const file of files.sort()) {
    const { document, diagnostics } = await fromFile(parser, join(specDir, file)).parse();
    if (!document) {
      const errors = diagnostics.filter((d) => d.severity === 0).map((d) => d.message);
      throw new Error(`${file} does not parse: ${errors.join('; ')}`);
    }
    for (const op of document.operations().all()) {
      if (op.action() === 'send' && op.bindings().get('amqp')?.value()?.cc) {
        sends.set(String(op.id()), route(op));
      }
    }
    finalStates(document).forEach((s) => finals.add(s));
  }
  if (finals.size === 0) throw new Error('no TaskState with x-spectask-final-states in the spec');
  return { sends, finalStates: finals };
}
