// The builder loads .svg files as strings (asset/source).
declare module '*.svg' {
  const value: string;
  export default value;
}
