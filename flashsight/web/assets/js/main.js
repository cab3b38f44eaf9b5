// Wires the page together: composer, sidebar, settings, status bar and sign-in.

import { loadSession, logout, whenUnauthorized } from './api.js';
import { Attachments, imageFilesOf } from './attachments.js';
import { Chat } from './chat.js';
import { LoginDialog } from './login.js';
import { Sidebar } from './sidebar.js';
import { StatusBar } from './status.js';

const byId = (id) => document.getElementById(id);
const limits = document.body.dataset;

const status = new StatusBar(byId('status'));
const attachments = new Attachments({
  list: byId('attachments'), note: byId('image-note'),
  longSide: Number(limits.imageLongSide), maxBytes: Number(limits.maxImageBytes), maxImages: Number(limits.maxImages),
});
const chat = new Chat({
  messagesElement: byId('messages'), emptyNote: byId('empty'), status,
  onBusy: setBusy,
  onCreated: (conversation) => {
    showConversation(conversation);
    sidebar.refresh();
  },
});
const sidebar = new Sidebar({
  list: byId('conversation-list'), search: byId('search'),
  onOpen: (id) => openConversation(id),
  onDeleted: (id) => { if (chat.conversation?.id === id) newChat(); },
  onRenamed: (id, title) => { if (chat.conversation?.id === id) byId('chat-title').textContent = title; },
  onError: showError,
});
const loginDialog = new LoginDialog(byId('login'), () => start());
whenUnauthorized(signedOut);

function showError(error) {
  const element = byId('error');
  element.textContent = error ? error.message || String(error) : '';
  element.hidden = !error;
}

function setBusy(busy) {
  byId('send').hidden = busy;
  byId('stop').hidden = !busy;
  if (!busy) byId('prompt').focus();
}

function showConversation(conversation) {
  byId('chat-title').textContent = conversation ? conversation.title : 'New chat';
  sidebar.select(conversation ? conversation.id : null);
  history.replaceState(null, '', conversation ? `#${conversation.id}` : location.pathname);
  showSettings(chat.settings);
}

async function openConversation(id) {
  if (chat.controller) return;
  try {
    await chat.open(id);
    showConversation(chat.conversation);
    showError(null);
  } catch (error) {
    showError(error);
    if (error.status === 404) newChat();
  }
  closeSidebar();
}

function newChat() {
  if (chat.controller) return;
  chat.reset();
  showConversation(null);
  closeSidebar();
  byId('prompt').focus();
}

// ---- settings ----

function showSettings(settings) {
  byId('setting-system').value = settings.system_prompt;
  byId('setting-temperature').value = settings.temperature ?? '';
  byId('setting-max-tokens').value = settings.max_tokens ?? '';
  byId('setting-thinking').checked = settings.thinking;
}

function readSettings() {
  const number = (id) => (byId(id).value === '' ? null : Number(byId(id).value));
  return {
    system_prompt: byId('setting-system').value,
    temperature: number('setting-temperature'),
    max_tokens: number('setting-max-tokens'),
    thinking: byId('setting-thinking').checked,
  };
}

for (const id of ['setting-system', 'setting-temperature', 'setting-max-tokens', 'setting-thinking']) {
  byId(id).addEventListener('change', () => chat.saveSettings(readSettings()).catch(showError));
}

function toggle(buttonId, onToggle) {
  const control = byId(buttonId);
  control.addEventListener('click', () => {
    const open = control.getAttribute('aria-expanded') !== 'true';
    control.setAttribute('aria-expanded', String(open));
    onToggle(open);
  });
}

toggle('toggle-settings', (open) => { byId('settings').hidden = !open; });
toggle('toggle-sidebar', (open) => byId('sidebar').classList.toggle('open', open));

byId('close-sidebar').addEventListener('click', closeSidebar);
byId('chat').addEventListener('click', (event) => {
  if (!event.target.closest('#toggle-sidebar')) closeSidebar();
});
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape') closeSidebar();
});

function closeSidebar() {
  byId('sidebar').classList.remove('open');
  byId('toggle-sidebar').setAttribute('aria-expanded', 'false');
}

// ---- composing ----

async function send() {
  const prompt = byId('prompt');
  const text = prompt.value.trim();
  if (chat.controller || (!text && !attachments.items.length)) return;
  const images = attachments.take();
  prompt.value = '';
  showError(null);
  try {
    await chat.send(text, images);
  } catch (error) {
    showError(error);
  }
  sidebar.refresh();
}

byId('composer').addEventListener('submit', (event) => {
  event.preventDefault();
  send();
});
byId('prompt').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
byId('stop').addEventListener('click', () => chat.stop());
byId('new-chat').addEventListener('click', newChat);
byId('attach').addEventListener('click', () => byId('file-input').click());
byId('file-input').addEventListener('change', async (event) => {
  await attachments.add([...event.target.files]);
  event.target.value = '';
});
byId('prompt').addEventListener('paste', (event) => {
  const files = imageFilesOf(event.clipboardData);
  if (!files.length) return;
  event.preventDefault();
  attachments.add(files);
});

const dropZone = byId('chat');
dropZone.addEventListener('dragover', (event) => {
  event.preventDefault();
  byId('composer').classList.add('dragging');
});
dropZone.addEventListener('dragleave', () => byId('composer').classList.remove('dragging'));
dropZone.addEventListener('drop', (event) => {
  event.preventDefault();
  byId('composer').classList.remove('dragging');
  attachments.add(imageFilesOf(event.dataTransfer));
});

// ---- signing in and out ----

function showAccount(user) {
  byId('account-user').textContent = user ? `Signed in as ${user}` : '';
  byId('account').hidden = !user;
}

// Nothing of the last user's stays on screen for whoever signs in next.
function signedOut() {
  document.body.dataset.ready = 'false';
  chat.stop();
  chat.reset();
  showConversation(null);
  sidebar.clear();
  showAccount(null);
  loginDialog.show();
}

byId('sign-out').addEventListener('click', async () => {
  try {
    await logout();
  } catch (error) {
    showError(error);
    return;
  }
  signedOut();
});

// ---- start ----

async function start() {
  let session;
  try {
    session = await loadSession();
  } catch (error) {
    showError(error);
    return;
  }
  if (session.auth_required && !session.user) {
    loginDialog.show();
    return;
  }
  showAccount(session.user);
  await sidebar.refresh();
  if (loginDialog.dialog.open) return; // the session ended meanwhile
  if (!status.started) {
    status.started = true;
    status.start();
  }
  const id = location.hash.slice(1);
  if (id) await openConversation(id);
  document.body.dataset.ready = 'true';
}

start();
