// amqplib on the wire, as the spec describes it: confirmed publishes to an operation's
// exchange, and the status request/reply over RabbitMQ direct reply-to.
import { randomUUID } from 'node:crypto';
import * as amqp from 'amqplib';
import type { SendRoute } from './spec';
import { StatusReply, StatusRequest } from './models';

const REPLY_TO = 'amq.rabbitmq.reply-to';

export class Wire {
  private pending = new Map<string, (body: string) => void>();
  private returned = new Map<string, string>();

  private constructor(
    private connection: amqp.ChannelModel,
    private channel: amqp.ConfirmChannel,
  ) {}

  static async open(url: string): Promise<Wire> {
    const connection = await amqp.connect(url);
    const channel = await connection.createConfirmChannel();
    const wire = new Wire(connection, channel);
    // a mandatory publish nothing takes comes back: say so instead of losing it
    channel.on('return', (msg: amqp.Message) => {
      wire.returned.set(String(msg.properties.messageId), msg.fields.routingKey);
    });
    await channel.consume(
      REPLY_TO,
      (msg) => {
        if (!msg) return;
        const done = wire.pending.get(String(msg.properties.correlationId));
        if (done) done(msg.content.toString('utf8'));
      },
      { noAck: true },
    );
    return wire;
  }

  /** Publish `body` as the operation says, and wait for the broker's confirm. */
  async send(
    route: SendRoute,
    body: string,
    options: { messageId?: string; replyTo?: string; correlationId?: string; expiration?: number } = {},
  ): Promise<void> {
    const messageId = options.messageId;
    await new Promise<void>((resolve, reject) => {
      this.channel.publish(
        route.exchange,
        route.routingKey,
        Buffer.from(body, 'utf8'),
        {
          messageId,
          type: route.messageType,
          contentType: route.contentType,
          persistent: route.persistent,
          mandatory: route.mandatory,
          replyTo: options.replyTo,
          correlationId: options.correlationId,
          expiration: options.expiration,
          headers: route.persistent ? { 'x-spectask-submitted-at': new Date().toISOString() } : {},
        },
        (err: unknown) => (err ? reject(err) : resolve()),
      );
    });
    if (messageId && this.returned.has(messageId)) {
      throw new Error(`${route.operation}: no queue takes routing key ${route.routingKey}`);
    }
  }

  /** One status request, answered by a collector (or refused, with the reason). */
  async status(route: SendRoute, taskIds: string[], timeoutMs = 10000): Promise<StatusReply> {
    const correlationId = randomUUID();
    const reply = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(correlationId);
        reject(new Error(`no status reply within ${timeoutMs} ms: is a collector running?`));
      }, timeoutMs);
      this.pending.set(correlationId, (body) => {
        clearTimeout(timer);
        this.pending.delete(correlationId);
        resolve(body);
      });
    });
    const request = new StatusRequest({ taskIds });
    await this.send(route, request.marshal(), {
      replyTo: REPLY_TO,
      correlationId,
      expiration: timeoutMs,
    });
    return StatusReply.unmarshal(await reply);
  }

  async close(): Promise<void> {
    await this.channel.close();
    await this.connection.close();
  }
}
