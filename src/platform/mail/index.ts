import nodemailer from 'nodemailer';

export interface MailMessage {
  to: string;
  subject: string;
  text: string;
}

/** Sends mail; `send` resolves true only when an SMTP server accepted the message. */
export interface Mailer {
  readonly enabled: boolean;
  send(message: MailMessage): Promise<boolean>;
  close(): void;
}

export function createMailer(opts: { smtpUrl?: string; from: string; onError?: (err: unknown) => void }): Mailer {
  if (!opts.smtpUrl) {
    return { enabled: false, send: async () => false, close() {} };
  }
  const transport = nodemailer.createTransport(opts.smtpUrl);
  return {
    enabled: true,
    async send(message) {
      try {
        const info = await transport.sendMail({ from: opts.from, ...message });
        return info.accepted.length > 0;
      } catch (err) {
        opts.onError?.(err);
        return false;
      }
    },
    close() {
      transport.close();
    },
  };
}
