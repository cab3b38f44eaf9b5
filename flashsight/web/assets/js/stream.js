// POST /v1/chat/completions with stream: true and read its server-sent events.

import { ApiError, checked, write } from './api.js';

// Calls onChunk(chunk) for each data event until [DONE]; aborting `signal` stops the fetch,
// and the server cancels the generation when the connection closes.
export async function streamChat(body, { signal, onChunk }) {
  const request = { ...body, stream: true, stream_options: { include_usage: true } };
  const response = await checked(await write('/v1/chat/completions', {
    method: 'POST', body: JSON.stringify(request), signal,
  }));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll('\r\n', '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (handleEvent(event, onChunk)) return;
    }
  }
}

// True at [DONE].
function handleEvent(event, onChunk) {
  for (const line of event.split('\n')) {
    if (!line.startsWith('data:')) continue;
    const data = line.slice(5).trim();
    if (data === '[DONE]') return true;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new ApiError(500, chunk.error.message || 'The generation failed.');
    onChunk(chunk);
  }
  return false;
}
