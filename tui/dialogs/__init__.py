"""The console's modal dialogs, one a module: new channel, prompt, emoji picker, confirm,
save files, attach a file, and the admin screen's forms and enrollment card."""
