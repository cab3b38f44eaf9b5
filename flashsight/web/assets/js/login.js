// The sign-in dialog, shown when the server asks for a login (401, or /auth/session says so).

import { login } from './api.js';

export class LoginDialog {
  constructor(dialog, onSignedIn) {
    this.dialog = dialog;
    this.onSignedIn = onSignedIn;
    this.form = dialog.querySelector('form');
    this.error = dialog.querySelector('#login-error');
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    dialog.addEventListener('cancel', (event) => event.preventDefault()); // nothing works signed out
  }

  show() {
    if (!this.dialog.open) this.dialog.showModal();
  }

  async submit() {
    const username = this.form.elements.username.value;
    const password = this.form.elements.password.value;
    try {
      const session = await login(username, password);
      this.error.hidden = true;
      this.form.reset();
      this.dialog.close();
      this.onSignedIn(session);
    } catch (error) {
      this.error.textContent = error.status === 401 ? 'Wrong user name or password.' : error.message;
      this.error.hidden = false;
    }
  }
}
