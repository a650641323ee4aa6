import { nestBehaviour } from './behaviour'

nestBehaviour('Nest 11')
