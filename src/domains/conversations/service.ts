/**
 * AI conversations owned by users: each chat turn goes to the model with the conversation's stored
 * history in front of it, and the turn (the new messages and the answer) is stored only once the
 * model has answered, so a failed call leaves no half-written turn behind. Every query filters by
 * owner: another user's conversation is NOT_FOUND.
 */
import type { AiMessage, AiService, ChatResult } from '../../platform/ai/index.ts';
import { newId } from '../../platform/crypto/index.ts';
import type { Db, Queryable } from '../../platform/db/index.ts';
import { AppError } from '../../platform/errors.ts';

export type ConversationRole = 'system' | 'user' | 'assistant';

export interface ConversationMessageInput {
  role: ConversationRole;
  content: string;
}

export interface ChatTurn {
  messages: ConversationMessageInput[];
  /** The user's task category (e.g. `automation`); stored on the conversation and hinted to the model. */
  task?: string | null;
  /** Continue this conversation (must be the caller's); omitted: a new conversation. */
  conversationId?: string | null;
}

export interface ChatTurnOptions {
  /** A provider id, `provider/model`, or a model name such as `gpt-4`. */
  model?: string | null;
  temperature?: number;
  maxTokens?: number;
  signal?: AbortSignal;
  /** Usage label recorded by the AI layer. */
  purpose?: string;
}

export interface Conversation {
  id: string;
  title: string;
  task: string | null;
  messageCount: number;
  createdAt: Date;
  updatedAt: Date;
}

export interface StoredMessage {
  seq: number;
  role: ConversationRole;
  content: string;
  provider: string | null;
  model: string | null;
  tokensUsed: number | null;
  cost: number | null;
  createdAt: Date;
}

export interface ChatTurnResult {
  conversationId: string;
  result: ChatResult;
}

export interface ChatTurnStream {
  conversationId: string;
  /** The answer's text deltas; iterating to the end stores the turn. Throws the catalogue error on failure. */
  deltas: AsyncIterable<string>;
  /** Settles once the turn is stored (after the last delta), or with the error that ended the stream. */
  done: Promise<ChatTurnResult>;
}

interface ConversationRow {
  id: string;
  title: string;
  task: string | null;
  message_count: number;
  created_at: Date;
  updated_at: Date;
}

interface MessageRow {
  seq: number;
  role: ConversationRole;
  content: string;
  provider: string | null;
  model: string | null;
  tokens_used: number | null;
  cost_usd: string | number | null;
  created_at: Date;
}

const CONVERSATION_COLUMNS = 'id, title, task, message_count, created_at, updated_at';
const TITLE_CHARS = 80;
/**
 * Stored history sent with a new turn, in characters: system messages always go, then the most
 * recent messages that fit. Older turns stay stored and readable, but a long conversation must not
 * grow the prompt without bound.
 */
const HISTORY_CHARS = 200_000;

function toConversation(r: ConversationRow): Conversation {
  return { id: r.id, title: r.title, task: r.task, messageCount: r.message_count, createdAt: r.created_at, updatedAt: r.updated_at };
}

function toMessage(r: MessageRow): StoredMessage {
  return {
    seq: r.seq,
    role: r.role,
    content: r.content,
    provider: r.provider,
    model: r.model,
    tokensUsed: r.tokens_used,
    cost: r.cost_usd === null ? null : Number(r.cost_usd),
    createdAt: r.created_at,
  };
}

/** The conversation's title: its first user message on one line, shortened. */
export function titleOf(messages: ConversationMessageInput[]): string {
  const first = messages.find((m) => m.role === 'user') ?? messages[0];
  const line = (first?.content ?? '').replace(/\s+/g, ' ').trim();
  if (!line) return 'Conversation';
  return line.length > TITLE_CHARS ? `${line.slice(0, TITLE_CHARS - 1).trimEnd()}…` : line;
}

/** The system hint a task category adds to every turn of the conversation. */
export function taskHint(task: string): string {
  return `The user's task category: ${task}.`;
}

/** Stored history to send: every system message, then the latest others that fit the budget, in order. */
function historyWindow(stored: StoredMessage[]): StoredMessage[] {
  let budget = HISTORY_CHARS;
  const keep = new Set<number>();
  for (const m of stored) {
    if (m.role === 'system') {
      keep.add(m.seq);
      budget -= m.content.length;
    }
  }
  for (let i = stored.length - 1; i >= 0; i--) {
    const m = stored[i]!;
    if (m.role === 'system') continue;
    if (m.content.length > budget) break;
    budget -= m.content.length;
    keep.add(m.seq);
  }
  return stored.filter((m) => keep.has(m.seq));
}

export class ConversationService {
  private readonly db: Db;
  private readonly ai: AiService;

  constructor(deps: { db: Db; ai: AiService }) {
    this.db = deps.db;
    this.ai = deps.ai;
  }

  /** One chat turn: the model answers the new messages after the stored history; the turn is stored. */
  async chat(userId: string, turn: ChatTurn, opts: ChatTurnOptions = {}): Promise<ChatTurnResult> {
    const plan = await this.plan(userId, turn);
    const result = await this.ai.chat(plan.prompt, this.callOptions(userId, opts));
    await this.store(userId, plan, result);
    return { conversationId: plan.conversationId, result };
  }

  /**
   * The same turn, streamed. Failures before the call starts (unknown conversation, no provider)
   * throw here; provider failures surface from iterating `deltas`.
   */
  async stream(userId: string, turn: ChatTurn, opts: ChatTurnOptions = {}): Promise<ChatTurnStream> {
    const plan = await this.plan(userId, turn);
    const s = await this.ai.stream(plan.prompt, this.callOptions(userId, opts));
    let settle!: { resolve: (v: ChatTurnResult) => void; reject: (e: unknown) => void };
    let settled = false;
    const done = new Promise<ChatTurnResult>((resolve, reject) => (settle = { resolve, reject }));
    done.catch(() => undefined);
    const store = (result: ChatResult) => this.store(userId, plan, result);
    async function* deltas(): AsyncGenerator<string> {
      try {
        for await (const d of s.deltas) yield d;
        // Read only after iterating: reading `result` first would make the layer drain the stream itself.
        const result = await s.result;
        await store(result);
        settled = true;
        settle.resolve({ conversationId: plan.conversationId, result });
      } catch (err) {
        settled = true;
        settle.reject(err);
        throw err;
      } finally {
        if (!settled) settle.reject(new AppError('SERVICE_UNAVAILABLE', 'The answer was not read to the end; the turn was not stored'));
      }
    }
    return { conversationId: plan.conversationId, deltas: deltas(), done };
  }

  /** The caller's conversations, most recently active first. */
  async list(userId: string, page: { page: number; limit: number }): Promise<{ conversations: Conversation[]; total: number }> {
    const offset = (page.page - 1) * page.limit;
    const [rows, count] = await Promise.all([
      this.db.query<ConversationRow>(
        `SELECT ${CONVERSATION_COLUMNS} FROM conversations WHERE user_id = $1 ORDER BY updated_at DESC, id DESC LIMIT $2 OFFSET $3`,
        [userId, page.limit, offset],
      ),
      this.db.query<{ n: string | number }>('SELECT count(*) AS n FROM conversations WHERE user_id = $1', [userId]),
    ]);
    return { conversations: rows.rows.map(toConversation), total: Number(count.rows[0]?.n ?? 0) };
  }

  /** One of the caller's conversations with all its messages; NOT_FOUND otherwise. */
  async getOrThrow(userId: string, id: string): Promise<{ conversation: Conversation; messages: StoredMessage[] }> {
    const conversation = await this.findOrThrow(this.db, userId, id);
    return { conversation, messages: await this.messagesOf(id) };
  }

  /** Deletes one of the caller's conversations and its messages; NOT_FOUND otherwise. */
  async remove(userId: string, id: string): Promise<void> {
    const { rowCount } = await this.db.query('DELETE FROM conversations WHERE id = $1 AND user_id = $2', [id, userId]);
    if (rowCount === 0) throw notFound(id);
  }

  private callOptions(userId: string, opts: ChatTurnOptions) {
    return {
      userId,
      provider: opts.model ?? null,
      temperature: opts.temperature,
      maxTokens: opts.maxTokens,
      signal: opts.signal,
      purpose: opts.purpose,
    };
  }

  /** What the model is sent, and what the turn will store. */
  private async plan(userId: string, turn: ChatTurn) {
    const task = turn.task?.trim() || null;
    if (!turn.conversationId) {
      return {
        conversationId: newId('conv'),
        isNew: true,
        task,
        title: titleOf(turn.messages),
        toStore: turn.messages,
        prompt: [...(task ? [{ role: 'system' as const, content: taskHint(task) }] : []), ...turn.messages] as AiMessage[],
      };
    }
    const conversation = await this.findOrThrow(this.db, userId, turn.conversationId);
    const stored = await this.messagesOf(conversation.id);
    // Clients often resend their system prompt with every turn; it is already in the history.
    const storedSystem = new Set(stored.filter((m) => m.role === 'system').map((m) => m.content));
    const toStore = turn.messages.filter((m) => !(m.role === 'system' && storedSystem.has(m.content)));
    const effectiveTask = task ?? conversation.task;
    const prompt: AiMessage[] = [
      ...(effectiveTask ? [{ role: 'system' as const, content: taskHint(effectiveTask) }] : []),
      ...historyWindow(stored).map((m) => ({ role: m.role, content: m.content })),
      ...toStore,
    ];
    return { conversationId: conversation.id, isNew: false, task, title: conversation.title, toStore, prompt };
  }

  /** Stores the turn's new messages and the answer; sequence numbers come from the conversation row. */
  private async store(userId: string, plan: Awaited<ReturnType<ConversationService['plan']>>, result: ChatResult): Promise<void> {
    const rows = [
      ...plan.toStore.map((m) => ({ role: m.role, content: m.content, provider: null, model: null, tokens: null, cost: null })),
      { role: 'assistant' as const, content: result.text, provider: result.provider, model: result.model, tokens: result.usage.totalTokens, cost: result.cost },
    ];
    await this.db.transaction(async (tx) => {
      let last: number;
      if (plan.isNew) {
        await tx.query('INSERT INTO conversations (id, user_id, title, task, message_count) VALUES ($1, $2, $3, $4, $5)', [
          plan.conversationId,
          userId,
          plan.title,
          plan.task,
          rows.length,
        ]);
        last = rows.length;
      } else {
        // Locks the row, so concurrent turns of one conversation get disjoint sequence numbers.
        const updated = await tx.query<{ message_count: number }>(
          `UPDATE conversations SET message_count = message_count + $3, task = COALESCE($4, task), updated_at = clock_timestamp()
           WHERE id = $1 AND user_id = $2 RETURNING message_count`,
          [plan.conversationId, userId, rows.length, plan.task],
        );
        if (!updated.rows[0]) throw notFound(plan.conversationId); // deleted while the model was answering
        last = updated.rows[0].message_count;
      }
      const first = last - rows.length + 1;
      const params: unknown[] = [];
      const values = rows.map((r, i) => {
        params.push(plan.conversationId, first + i, r.role, r.content, r.provider, r.model, r.tokens, r.cost);
        const b = i * 8;
        return `($${b + 1}, $${b + 2}, $${b + 3}, $${b + 4}, $${b + 5}, $${b + 6}, $${b + 7}, $${b + 8})`;
      });
      await tx.query(
        `INSERT INTO conversation_messages (conversation_id, seq, role, content, provider, model, tokens_used, cost_usd) VALUES ${values.join(', ')}`,
        params,
      );
    });
  }

  private async findOrThrow(db: Queryable, userId: string, id: string): Promise<Conversation> {
    const { rows } = await db.query<ConversationRow>(`SELECT ${CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND user_id = $2`, [id, userId]);
    if (!rows[0]) throw notFound(id);
    return toConversation(rows[0]);
  }

  private async messagesOf(conversationId: string): Promise<StoredMessage[]> {
    const { rows } = await this.db.query<MessageRow>(
      'SELECT seq, role, content, provider, model, tokens_used, cost_usd, created_at FROM conversation_messages WHERE conversation_id = $1 ORDER BY seq',
      [conversationId],
    );
    return rows.map(toMessage);
  }
}

function notFound(id: string): AppError {
  return new AppError('NOT_FOUND', `Conversation ${id} not found`, { details: { conversation_id: id } });
}
