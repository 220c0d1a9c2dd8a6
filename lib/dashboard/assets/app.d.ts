/** app.js, imported as text by page.ts (it is served to the browser, not run here). */
declare const text: string;
export default text;
